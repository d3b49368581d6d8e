"""Sealing's invariants (docs/decisions/0030-crypto-shredding.md): what is sealed opens,
whole, with its key and as its subject only; no sealed value shows what it seals; a value
changed anywhere does not open."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.kernel.sealing import PREFIX, SealBroken, new_key, open_sealed, seal

KEY, OTHER_KEY = new_key(), new_key()
subjects = st.text(min_size=1, max_size=40)
plaintexts = st.binary(min_size=0, max_size=300)


@given(plaintext=plaintexts, subject=subjects)
def test_a_sealed_value_opens_whole_with_its_key_as_its_subject(
    plaintext: bytes, subject: str
) -> None:
    assert open_sealed(KEY, seal(KEY, plaintext, subject=subject), subject=subject) == plaintext


@given(plaintext=plaintexts, subject=subjects, other=subjects)
def test_it_opens_with_no_other_key_nor_as_another_subject(
    plaintext: bytes, subject: str, other: str
) -> None:
    sealed = seal(KEY, plaintext, subject=subject)
    with pytest.raises(SealBroken):
        open_sealed(OTHER_KEY, sealed, subject=subject)
    if other != subject:
        with pytest.raises(SealBroken):
            open_sealed(KEY, sealed, subject=other)


@given(plaintext=st.binary(min_size=8, max_size=300), subject=subjects)
def test_no_sealed_value_shows_what_it_seals_and_two_sealings_differ(
    plaintext: bytes, subject: str
) -> None:
    first, second = seal(KEY, plaintext, subject=subject), seal(KEY, plaintext, subject=subject)
    assert first != second  # a fresh nonce each time: equal details are not linkable
    assert plaintext not in first.encode()


@given(plaintext=plaintexts, subject=subjects, data=st.data())
def test_a_value_changed_anywhere_does_not_open(
    plaintext: bytes, subject: str, data: st.DataObject
) -> None:
    sealed = seal(KEY, plaintext, subject=subject)
    raw = bytearray(base64.urlsafe_b64decode(sealed.removeprefix(PREFIX)))
    at = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    raw[at] ^= data.draw(st.integers(min_value=1, max_value=255))  # nonce, text or tag
    with pytest.raises(SealBroken):
        open_sealed(KEY, PREFIX + base64.urlsafe_b64encode(bytes(raw)).decode(), subject=subject)
