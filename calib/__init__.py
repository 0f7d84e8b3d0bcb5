"""Calibration data readers and INT8 quantization (QDQ) for deployable builds."""
