"""Language of a conversation: Italian or English, detected from the customer's words.

A small lexical score is enough for two languages this different and costs microseconds; the
language is chosen once, from the first message that shows evidence, and then kept. The markers
are the languages' function words and greetings, plus the domain pack's own vocabulary: words
its training examples use often in one language and never in the other (a pack about insurance
brings "polizza" and "claim", the sample "bolletta" and "meter").
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

SUPPORTED = ("it", "en")
_WORD = re.compile(r"[a-zà-ÿ']+")
VOCABULARY_MIN_COUNT = 3  # a pack's word is a marker once it is this frequent in one language
VOCABULARY_MAX_WORDS = 400  # per language: the most frequent ones

_FUNCTION_WORDS = {
    "it": frozenset(
        "il lo la i gli le un una uno di da del della dei delle nel nella che non per con sono "
        "è e ho ha mi ti ci vi si mio mia miei sua suo vorrei voglio posso può potrei buongiorno "
        "buonasera ciao grazie salve sì no come quando dove perché perche quanto operatore "
        "parlare codice cliente ancora anche pagare pagato indirizzo numero "
        "ok va bene certo esatto arrivederci manca funziona".split()
    ),
    "en": frozenset(
        "the a an of to in on for with is are am was were i my me you your it this that "
        "want would like can could please hello hi hey thanks thank yes no not what when "
        "where why how much agent speak talk customer code pay paid address number "
        "still also okay sure right correct bye goodbye working broken need help".split()
    ),
}


@dataclass(frozen=True)
class LanguageDetector:
    markers: Mapping[str, frozenset[str]]

    def detect(self, text: str) -> str | None:
        """``"it"``, ``"en"``, or ``None`` when the text gives no evidence (codes, noise)."""
        words = _WORD.findall(text.lower())
        if not words:
            return None
        scores = {
            lang: sum(1 for w in words if w in markers or w.split("'")[-1] in markers)
            for lang, markers in self.markers.items()
        }
        # Elisions (l'ultima, dell'utenza, c'è) and accented vowels are Italian evidence.
        scores["it"] += sum(1 for w in words if "'" in w) + len(
            re.findall(r"[àèéìòù]", text.lower())
        )
        best = max(scores, key=lambda k: scores[k])
        if scores[best] == 0 or list(scores.values()).count(scores[best]) > 1:
            return None
        return best

    def with_vocabulary(self, examples: Mapping[str, Iterable[str]]) -> LanguageDetector:
        """These markers plus the words the examples of one language use often and the other
        language's never."""
        counts = {
            lang: Counter(w for text in texts for w in _WORD.findall(text.lower()))
            for lang, texts in examples.items()
        }
        markers = dict(self.markers)
        for lang, counted in counts.items():
            others = set().union(*(set(c) for other, c in counts.items() if other != lang))
            own = [
                w
                for w, n in counted.most_common()
                if n >= VOCABULARY_MIN_COUNT and w not in others and len(w) > 2
            ][:VOCABULARY_MAX_WORDS]
            markers[lang] = markers.get(lang, frozenset()) | frozenset(own)
        return LanguageDetector(markers)


GENERIC = LanguageDetector(_FUNCTION_WORDS)

