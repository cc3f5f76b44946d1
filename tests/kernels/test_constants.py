"""The kernels' enums as the two sides see them: the names sdk._kernels exports (from
kernels/include/sonoedge/common.h) equal sdk._constants', whose positions are the codes the
Python wrappers pass."""

from __future__ import annotations

from sdk import _constants as C
from sdk import _kernels
from sdk.kernels import _validate as V


def test_enum_names_match_the_compiled_kernels() -> None:
    assert _kernels.CHANNELS == C.CHANNELS == ("image", "gdm", "gdx", "gdy")
    assert _kernels.COLORS == C.COLORS == ("gray", "bgr", "rgb")
    assert _kernels.INTERPOLATIONS == C.INTERPOLATIONS == ("linear", "area")


def test_codes_are_the_compiled_enum_values() -> None:
    assert V.CHANNEL_CODES == {"image": 0, "gdm": 1, "gdx": 2, "gdy": 3}
    assert V.COLOR_CODES == {"gray": 0, "bgr": 1, "rgb": 2}
    assert V.INTERP_CODES == {"linear": 0, "area": 1}
    for names, codes in (
        (_kernels.CHANNELS, V.CHANNEL_CODES),
        (_kernels.COLORS, V.COLOR_CODES),
        (_kernels.INTERPOLATIONS, V.INTERP_CODES),
    ):
        assert {n: i for i, n in enumerate(names)} == codes
