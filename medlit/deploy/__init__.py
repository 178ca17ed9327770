"""Deployment: a run rebuilt from its checkpoint, predictions on new files, ONNX/TorchScript export, the web app."""
