import subprocess
import sys

import pytest

import zerosearch_trl as zs
from zerosearch_trl.generation.factory import make_generator


def test_every_public_name_resolves():
    for name in zs.__all__:
        assert getattr(zs, name) is not None, name
    assert set(zs.__all__) <= set(dir(zs))


def test_importing_the_package_loads_neither_torch_nor_transformers():
    code = (
        "import sys, zerosearch_trl as zs; zs.f1_reward; print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]


def test_unknown_attribute():
    with pytest.raises(AttributeError, match="no_such_thing"):
        zs.no_such_thing  # noqa: B018


def test_vllm_backend_import_is_guarded():
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"zerosearch-trl\[vllm\]"):
            zs.VLLMGenerator("some/model")
    else:
        pytest.skip("vLLM is installed here; the GPU benchmark exercises it")


def test_make_generator_rejects_unknown_backend_and_missing_url():
    with pytest.raises(ValueError, match="'sglang-rs'"):
        make_generator("sglang-rs")
    with pytest.raises(ValueError, match="base_url"):
        make_generator("openai")
