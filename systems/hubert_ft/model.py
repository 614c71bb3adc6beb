"""HuBERT fine-tune (seed 004 §3.3: chinese-hubert-large + two FC layers): the shared SSL head of
systems/common/ssl.py, configured for HuBERT by conf/{paper,demo}.yaml (`kind: hubert`)."""
from systems.common.ssl import SSLFineTune as HuBERTFineTune  # noqa: F401
