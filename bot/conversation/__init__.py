"""The conversation: its states, its customer's language and identity, and the one service that
writes customer messages and masks them."""
