"""SecretBytes shows nothing by accident and leaves only through reveal()."""

from __future__ import annotations

import copy
import json
import pickle

import pytest

from mesos_secrets import SecretBytes


class TestMasking:
    def test_repr_str_format(self) -> None:
        """repr, str and every format spec are masked."""
        s = SecretBytes(b"hunter2")
        formatted = ("%s" % s, "{}".format(s), "{:^30}".format(s))  # noqa: UP031, UP032
        for text in (repr(s), str(s), f"{s}", f"{s:>40}", f"{s!r}", *formatted):
            assert "hunter2" not in text
            assert "redacted" in text

    def test_reveal(self) -> None:
        """reveal() returns the bytes; str input is UTF-8 encoded."""
        assert SecretBytes(b"\x00\xff").reveal() == b"\x00\xff"
        assert SecretBytes("pässword").reveal() == "pässword".encode()
        assert SecretBytes(bytearray(b"ab")).reveal() == b"ab"
        assert SecretBytes(memoryview(b"ab")).reveal() == b"ab"

    def test_reveal_text(self) -> None:
        """Text decoding errors do not echo the bytes."""
        assert SecretBytes(b"abc").reveal_text() == "abc"
        with pytest.raises(ValueError, match="not valid utf-8") as caught:
            SecretBytes(b"\xffsecret").reveal_text()
        assert "secret" not in str(caught.value).replace("secret value", "")

    def test_wrong_type(self) -> None:
        """Only bytes-like or str is accepted, and the error does not quote the input."""
        with pytest.raises(TypeError, match="not int"):
            SecretBytes(12345)  # type: ignore[arg-type]

    def test_len_and_bool(self) -> None:
        assert len(SecretBytes(b"abc")) == 3
        assert not SecretBytes(b"")


class TestEquality:
    def test_equal(self) -> None:
        """Equal values compare equal (in constant time)."""
        assert SecretBytes(b"a") == SecretBytes(b"a")
        assert SecretBytes(b"a") != SecretBytes(b"b")

    def test_not_equal_to_plain_bytes(self) -> None:
        """A SecretBytes is never equal to plain bytes: comparisons stay explicit."""
        assert SecretBytes(b"a") != b"a"

    def test_unhashable(self) -> None:
        """No hash, so no digest of the value ends up in dict or set internals."""
        with pytest.raises(TypeError):
            hash(SecretBytes(b"a"))


class TestRefusals:
    def test_pickle(self) -> None:
        """Pickling is refused at every protocol."""
        for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
            with pytest.raises(TypeError, match="cannot be pickled"):
                pickle.dumps(SecretBytes(b"hunter2"), protocol=protocol)

    def test_json(self) -> None:
        """json.dumps refuses it without quoting it."""
        with pytest.raises(TypeError) as caught:
            json.dumps({"x": SecretBytes(b"hunter2")})
        assert "hunter2" not in str(caught.value)

    def test_implicit_bytes(self) -> None:
        """bytes(s) does not reveal the value."""
        with pytest.raises(TypeError):
            bytes(SecretBytes(b"hunter2"))  # type: ignore[call-overload]

    def test_immutable(self) -> None:
        """The value cannot be replaced."""
        s = SecretBytes(b"a")
        with pytest.raises(AttributeError):
            s._data = b"b"  # type: ignore[misc]
        with pytest.raises(AttributeError):
            del s._data

    def test_no_dict(self) -> None:
        """A slotted class: no __dict__ for vars() or debuggers to dump."""
        with pytest.raises(TypeError):
            vars(SecretBytes(b"a"))

    def test_copy(self) -> None:
        """copy and deepcopy work (they share the immutable value)."""
        s = SecretBytes(b"a")
        assert copy.copy(s) == s
        assert copy.deepcopy({"k": s})["k"] == s
