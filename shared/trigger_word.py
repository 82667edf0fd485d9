"""The trigger word of a likeness: the rare token that names the person in every caption and prompt.

A contract between the gateway (it records the word when a likeness is requested) and the trainer
(it captions the training set with it). Rule as in DreamBooth (Ruiz et al. 2022, "sks"-style rare
identifiers): consonant-vowel syllables that CLIP splits into rare tokens, so the word carries no prior
meaning; derived from the likeness id so it is stable per likeness. Pure Python: no face toolkit.
"""

from __future__ import annotations

import hashlib

_ONSETS = "bdfghjklmnprstvz"
_VOWELS = "aeiou"


def make_trigger_word(key: str) -> str:
    """A rare, pronounceable token derived from `key` (e.g. the likeness id), like "zuvek".

    Returns 5 lowercase letters, consonant-vowel-consonant-vowel-consonant; the same key always gives
    the same word.
    """
    digest = hashlib.sha256(key.encode()).digest()
    letters = []
    for i in range(3):
        letters.append(_ONSETS[digest[2 * i] % len(_ONSETS)])
        letters.append(_VOWELS[digest[2 * i + 1] % len(_VOWELS)])
    return "".join(letters[:5])
