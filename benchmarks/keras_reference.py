"""The reference Keras pipeline, timed: ImageDataGenerator.flow_from_directory into the reference custom CNN.

Runs in the separate TensorFlow environment that `throughput.py` creates (tf.keras 2 through `tf_keras`,
since Keras 3 no longer has ImageDataGenerator). The network mirrors medlit's `CustomCNN`: four blocks of
3x3 convolution (no bias), BatchNorm, ReLU, 2x2 max-pooling and spatial dropout 0.1 (32->64->128->256),
global average pooling, dense 512 -> 256 with ReLU and dropout 0.5, one logit; Adam 3e-4, binary
cross-entropy. Writes the time of every epoch and step to a JSON file.

    python keras_reference.py --data <folder with train/> --image-size 150 --epochs 2 --out keras.json
"""

import argparse
import json
import os
import resource
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tf_keras as keras
from tf_keras import layers
from tf_keras.preprocessing.image import ImageDataGenerator


def custom_cnn(size: int) -> keras.Model:
    inputs = keras.Input((size, size, 1))
    x = inputs
    for width in (32, 64, 128, 256):
        x = layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.MaxPooling2D(2, padding="same")(x)
        x = layers.SpatialDropout2D(0.1)(x)
    x = layers.GlobalAveragePooling2D()(x)
    for width in (512, 256):
        x = layers.Dense(width, activation="relu")(x)
        x = layers.Dropout(0.5)(x)
    return keras.Model(inputs, layers.Dense(1)(x))


class Timer(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.epochs, self.steps = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = self.last = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        self.steps.append({"epoch": len(self.epochs), "time": now - self.last})
        self.last = now

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append({"epoch": epoch, "train_time": time.perf_counter() - self.start})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a folder with train/<class>/<images>")
    parser.add_argument("--image-size", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    generator = ImageDataGenerator(
        rescale=1 / 255,
        rotation_range=30,
        zoom_range=0.2,
        width_shift_range=0.1,
        height_shift_range=0.1,
        horizontal_flip=True,
    )
    flow = generator.flow_from_directory(
        os.path.join(args.data, "train"),
        target_size=(args.image_size, args.image_size),
        color_mode="grayscale",
        class_mode="binary",
        batch_size=args.batch_size,
        shuffle=True,
        seed=0,
    )
    model = custom_cnn(args.image_size)
    model.compile(optimizer=keras.optimizers.Adam(3e-4), loss=keras.losses.BinaryCrossentropy(from_logits=True))
    timer = Timer()
    model.fit(flow, epochs=args.epochs, callbacks=[timer], verbose=0)
    for epoch in timer.epochs:
        epoch["images"] = flow.samples
        epoch["images_per_s"] = flow.samples / epoch["train_time"]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with open(args.out, "w") as out:
        json.dump({"epochs": timer.epochs, "steps": timer.steps, "peak_rss_mb": peak}, out, indent=1)


if __name__ == "__main__":
    main()
