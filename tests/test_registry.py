"""The shared registry behind encoders, objectives and heads."""
import pytest

from sleepfm.exceptions import SleepFMError
from sleepfm.models import list_encoders
from sleepfm.models.heads import list_heads
from sleepfm.registry import Registry
from sleepfm.ssl import list_objectives


def test_register_create_and_errors():
    reg = Registry("widget", attribute="widget_name")

    @reg.register("round_widget")
    class Round:
        def __init__(self, size=1):
            self.size = size

    assert Round.widget_name == "round_widget"
    assert reg.create("round_widget", size=3).size == 3
    assert reg.names("round*") == ["round_widget"] and "round_widget" in reg and len(reg) == 1
    with pytest.raises(ValueError, match="Unknown widget 'square'. Known widgets: round_widget"):
        reg.create("square")
    with pytest.raises(SleepFMError, match="already registered"):
        reg.register("round_widget")(Round)


def test_package_registries_are_populated():
    assert {"sleepfm_base", "sleepfm_tiny"} <= set(list_encoders())
    assert {"loo_contrastive", "pairwise_contrastive"} <= set(list_objectives())
    assert {"staging_lstm", "linear_probe", "mlp", "events"} <= set(list_heads())
