"""Hostile values for the public config dataclasses: any value of any field builds the config (and, for a model, the
VAE) or is refused with one line of InputError, never another exception."""

import dataclasses

import pyro
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from ppl_vae.config import DataConfig, EvalConfig, ModelConfig, TrainConfig
from ppl_vae.errors import InputError
from ppl_vae.lab import LabConfig
from ppl_vae.report import ReportConfig
from ppl_vae.vae import VAE

SCHEMAS = (DataConfig, ModelConfig, TrainConfig, EvalConfig, ReportConfig, LabConfig)
SIZED = {"x_dim": 64, "image_shape": (1, 8, 8)}

SCALARS = st.one_of(
    st.booleans(),
    st.none(),
    st.integers(-3, 300),
    st.sampled_from([0, -1, 2**31, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(["trace", "iaf", "vamp", "cpu", "cuda:99", "meta", "digits", "", "1"]),
)
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3), st.lists(SCALARS, max_size=3).map(tuple))


@seed(0)
@settings(max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(schema=st.sampled_from(SCHEMAS), data=st.data())
def test_any_value_of_any_field_builds_or_is_one_line(schema, data):
    fields = [field.name for field in dataclasses.fields(schema) if not (schema is ModelConfig and field.name in SIZED)]
    chosen = data.draw(st.lists(st.sampled_from(fields), min_size=1, max_size=3, unique=True))
    values = {name: data.draw(VALUES, label=name) for name in chosen}
    pyro.clear_param_store()
    try:
        config = schema(**(SIZED if schema is ModelConfig else {}), **values)
        if schema is ModelConfig:
            VAE(config)  # the parts' checks and the memory bound, then construction
    except InputError as error:
        assert "\n" not in str(error), str(error)
