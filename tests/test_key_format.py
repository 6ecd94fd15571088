"""Unit tests for the pure key format: generation, checksum, digest."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlflow_hokusai.keys import format as kf


def test_generated_key_shape_and_entropy():
    key = kf.generate_key()
    assert re.fullmatch(r"hk_live_[0-9A-Za-z]{39}", key)
    assert kf.RANDOM_LENGTH * 5.954 >= 190  # log2(62) bits per character
    assert kf.parse_key(key).environment == "live"
    assert kf.parse_key(kf.generate_key("test")).environment == "test"
    assert len({kf.generate_key() for _ in range(1000)}) == 1000


def test_unknown_environment_is_refused_at_generation():
    with pytest.raises(ValueError):
        kf.generate_key("prod")


def test_every_single_character_change_is_rejected_by_checksum():
    key = kf.generate_key()
    for i in range(len("hk_live_"), len(key)):
        for replacement in "0aZ":
            if key[i] == replacement:
                continue
            mutated = key[:i] + replacement + key[i + 1 :]
            with pytest.raises(kf.KeyFormatError):
                kf.parse_key(mutated)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "hk_live_",
        "hk_prod_" + "A" * 39,
        "HK_live_" + "A" * 39,
        "hk-live-" + "A" * 39,
        "hk_live_" + "A" * 38 + "!",
        "hk_live_" + "é" * 39,
    ],
)
def test_malformed_values_are_rejected(value):
    with pytest.raises(kf.KeyFormatError):
        kf.parse_key(value)


def test_truncated_and_extended_keys_are_rejected():
    key = kf.generate_key()
    for bad in (key[:-1], key + "A", key[1:]):
        with pytest.raises(kf.KeyFormatError):
            kf.parse_key(bad)


def test_other_environment_prefix_fails_checksum():
    key = kf.generate_key("live")
    with pytest.raises(kf.KeyFormatError):
        kf.parse_key(key.replace("hk_live_", "hk_test_"))


def test_digest_is_sha256_hex_and_stable():
    key = kf.generate_key()
    assert kf.digest(key) == kf.parse_key(key).digest
    assert re.fullmatch(r"[0-9a-f]{64}", kf.digest(key))
    assert kf.digest(key) != kf.digest(kf.generate_key())
    assert kf.parse_key(key).display_prefix == key[:12]


@given(st.text(max_size=80))
def test_random_strings_never_parse_and_never_crash(text):
    try:
        parsed = kf.parse_key(text)
    except kf.KeyFormatError:
        return
    # A random string passing shape *and* a 32-bit checksum is possible only if it is a key.
    assert parsed.key == text and len(text) == kf.MAX_KEY_LENGTH
