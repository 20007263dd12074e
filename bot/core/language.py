"""Language of a conversation: Italian or English, detected from the customer's words.

A small lexical score is enough for two languages this different and costs microseconds; the
language is chosen once, from the first message that shows evidence, and then kept.
"""

from __future__ import annotations

import re

SUPPORTED = ("it", "en")
_WORD = re.compile(r"[a-zà-ÿ']+")

_MARKERS = {
    "it": frozenset(
        "il lo la i gli le un una uno di da del della dei delle nel nella che non per con sono "
        "è e ho ha mi ti ci vi si mio mia miei sua suo vorrei voglio posso può potrei buongiorno "
        "buonasera ciao grazie salve sì no come quando dove perché perche quanto bolletta "
        "lettura contatore guasto luce operatore parlare codice cliente ancora anche "
        "pagare pagato fattura addebito disdetta offerta contratto indirizzo numero pratica "
        "ok va bene certo esatto arrivederci manca funziona".split()
    ),
    "en": frozenset(
        "the a an of to in on for with is are am was were i my me you your it this that "
        "want would like can could please hello hi hey thanks thank yes no not what when "
        "where why how much bill reading meter outage power agent speak talk customer code "
        "pay paid invoice charge cancel offer contract address number ticket still also "
        "okay sure right correct bye goodbye working broken need help".split()
    ),
}


def detect_language(text: str) -> str | None:
    """``"it"``, ``"en"``, or ``None`` when the text gives no evidence (codes, digits, noise)."""
    words = _WORD.findall(text.lower())
    if not words:
        return None
    scores = {
        lang: sum(1 for w in words if w in markers or w.split("'")[-1] in markers)
        for lang, markers in _MARKERS.items()
    }
    # Elisions (l'ultima, dell'utenza, c'è) and accented vowels are Italian evidence.
    scores["it"] += sum(1 for w in words if "'" in w) + len(re.findall(r"[àèéìòù]", text.lower()))
    best = max(scores, key=lambda k: scores[k])
    if scores[best] == 0 or list(scores.values()).count(scores[best]) > 1:
        return None
    return best
