"""One call's loop, split by task; ``voice.call.call.Call`` owns the tasks (see its module)."""
