"""Keep the model libraries' chatter out of vitrina's output.

transformers prints load reports, weight-loading progress bars and advice meant for model
authors; huggingface_hub and torch add Python warnings; the tokenizers library warns when a
process forks after using it. None of it helps someone indexing a collection, and all of it
runs into vitrina's own progress and summaries. ``quiet_models()`` wraps every model load.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

_NOISY = r"(transformers|huggingface_hub|torch|tokenizers|safetensors)(\.|$)"


def silence_model_libraries() -> None:
    """Lasting settings: transformers and huggingface_hub log errors only and show no bars."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # no "process just got forked" warning
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - depends on the install
        pass
    try:
        from huggingface_hub.utils import disable_progress_bars
        from huggingface_hub.utils import logging as hub_logging

        hub_logging.set_verbosity_error()
        disable_progress_bars()
    except ImportError:  # pragma: no cover - depends on the install
        pass


@contextmanager
def quiet_models() -> Iterator[None]:
    """Around a model load: the lasting settings, and the libraries' Python warnings ignored."""
    silence_model_libraries()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=_NOISY)
        yield
