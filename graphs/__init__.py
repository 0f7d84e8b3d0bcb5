"""The ONNX side of compress: channel dependency groups, removable blocks, surgery, verification.

This package imports onnx, onnx-graphsurgeon and numpy, never torch: everything here works on an
ONNX file alone. `toolchain` joins it to the torch world by parameter name.
"""
