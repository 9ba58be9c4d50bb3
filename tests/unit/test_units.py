import pytest
from hypothesis import given
from hypothesis import strategies as st

from rota.spec.units import format_duration, parse_duration, parse_size


@pytest.mark.parametrize(
    "text,expected",
    [("30GB", 30 * 2**30), ("30 GiB", 30 * 2**30), ("512M", 512 * 2**20), ("1.5TB", int(1.5 * 2**40)), ("1024B", 1024),
     ("80gb", 80 * 2**30), ("0", 0), (0, 0), (0.0, 0), ("0GB", 0)],
)
def test_sizes(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "text,expected",
    [("45m", 2700.0), ("2h", 7200.0), ("1h30m", 5400.0), ("90s", 90.0), ("1d", 86400.0), ("00:30:00", 1800.0),
     ("1:00", 60.0), (12, 12.0), ("1.5h", 5400.0), ("250ms", 0.25)],
)
def test_durations(text, expected):
    assert parse_duration(text) == pytest.approx(expected)


@pytest.mark.parametrize("bad", ["30XB", "-1GB", "GB", "", True, None, [1], float("nan"), "1e999GB"])
def test_bad_sizes(bad):
    with pytest.raises(ValueError):
        parse_size(bad)


@pytest.mark.parametrize("bare", [24, "24", " 24 ", 1.5, "1.5", 1024])
def test_a_size_without_a_unit_is_refused(bare):
    """Issue 17: ``--gpus 2x24`` booked 24-byte GPUs; a bare number other than 0 is refused."""
    with pytest.raises(ValueError, match=r"a size needs a unit.*'24GB'|a size needs a unit"):
        parse_size(bare)


def test_size_messages_quote_the_users_text_once():
    with pytest.raises(ValueError) as e:
        parse_size("30G B")
    assert str(e.value).count("'30G B'") == 1
    with pytest.raises(ValueError, match=r"write e.g. '24GB' \(or '24B'"):
        parse_size("24")


@pytest.mark.parametrize("bad", ["45x", "h", "", "1h 2", True, -5, float("inf"), "99999999999d"])
def test_bad_durations(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


@given(st.integers(min_value=0, max_value=10**7))
def test_duration_roundtrip_seconds(n):
    assert parse_duration(f"{n}s") == n
    assert format_duration(n)
