"""The Open Inference Protocol (KServe V2) model both faces share: its tensors and its checks."""
