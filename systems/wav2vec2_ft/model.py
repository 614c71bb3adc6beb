"""wav2vec 2.0 fine-tune (e.g. wav2vec2-xls-r-300m + two FC layers, as seed 004's HuBERT system): the
shared SSL head of systems/common/ssl.py, configured by conf/{paper,demo}.yaml (`kind: wav2vec2`)."""
from systems.common.ssl import SSLFineTune as Wav2Vec2FineTune  # noqa: F401
