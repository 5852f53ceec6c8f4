"""ImageNet-1k class indices that belong to an STL-10 class, kept as data.

Used by Q1(b-I): an ImageNet classifier, untrained on STL-10, predicts one of
1000 classes; a class listed here maps to its STL-10 class, every other class
to ``other``. Choices worth knowing:

- ImageNet-1k has **no deer** class: deer images can only be wrong or ``other``.
- Index 726 "plane" is the carpenter's tool, not an aircraft; 908 "wing" is left out
  too (an aircraft part, but as often a close-up). Airplanes are 404 airliner and 895 warplane.
- Monkeys are the Old and New World monkeys 370-382; the apes (365-369) and lemurs
  (383-384) are not monkeys and map to ``other``.
- 717 "pickup" is a pickup *truck*; 705 "passenger car" is a railway carriage (``other``).
"""
from __future__ import annotations

from labkit.data.loaders import STL10_CLASSES

IMAGENET_TO_STL10_CLASS: dict[str, list[int]] = {
    "airplane": [404, 895],
    "bird": list(range(7, 25)) + list(range(80, 101)) + list(range(127, 147)),
    "car": [407, 436, 468, 511, 609, 627, 656, 661, 751, 817],
    "cat": list(range(281, 286)),
    "deer": [],
    "dog": list(range(151, 269)),
    "horse": [339],
    "monkey": list(range(370, 383)),
    "ship": [403, 472, 484, 510, 554, 576, 625, 628, 724, 780, 814, 833, 871, 914],
    "truck": [555, 569, 675, 717, 734, 864, 867],
}

# ImageNet index -> STL-10 class index (0..9); indices not listed map to "other".
IMAGENET_TO_STL10: dict[int, int] = {i: STL10_CLASSES.index(name)
                                     for name, indices in IMAGENET_TO_STL10_CLASS.items() for i in indices}
