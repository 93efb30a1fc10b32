"""The inference service (FastAPI + ONNX Runtime). It never imports torch: an ONNX file and its model card are the
whole contract with training. Filled by the service issues.
"""
