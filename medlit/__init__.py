"""medlit: train, compare and explain chest X-ray and IMDb sentiment classifiers.

The library is grouped by concern, each layer importing only the ones below it:

- `medlit.cli`: the commands (`medlit train`, `medlit eval`, ...), thin faces over the library;
- `medlit.deploy`: a trained checkpoint rebuilt, predicting new inputs, exported, served;
- `medlit.interpret`: why a model decides what it decides (Grad-CAM, LIME, Integrated Gradients);
- `medlit.training`: the LightningModule, callbacks and the training run;
- `medlit.evaluation`: predictions, reports, intervals, thresholds, figures, comparisons of runs;
- `medlit.models`: the networks; `medlit.data`: the data modules and what they share.
"""

from medlit.resolvers import register_resolvers

__version__ = "0.2.0"

register_resolvers()
