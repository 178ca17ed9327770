"""Train a classifier, select it on validation and test it once: the same as `medlit train`.

python train.py                                   # PneumoniaMNIST, custom CNN
python train.py model=mobilenetv2 data=chest_xray
python train.py -m optimizer.lr=1e-4,3e-4         # a sweep, one run directory per job
"""

from medlit.cli.train import main

if __name__ == "__main__":
    main()
