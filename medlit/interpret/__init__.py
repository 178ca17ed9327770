"""Interpretation: Grad-CAM, LIME, layer activations and Integrated Gradients, and their figures and pages."""
