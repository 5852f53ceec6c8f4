"""ImageNet-1k classes that belong to an STL-10 class, kept as data; every other class is 'other'."""
from labkit.data import STL10_CLASSES as DATA_STL10_CLASSES
from labkit.questions.imagenet import IMAGENET_TO_STL10, IMAGENET_TO_STL10_CLASS, STL10_CLASSES
from labkit.models import imagenet_classes


def test_imagenet_mapping_spot_checks():
    names = imagenet_classes("resnet50")
    assert IMAGENET_TO_STL10[151] == STL10_CLASSES.index("dog") and IMAGENET_TO_STL10[268] == STL10_CLASSES.index("dog")
    assert all(IMAGENET_TO_STL10[i] == STL10_CLASSES.index("cat") for i in range(281, 286))
    assert IMAGENET_TO_STL10[404] == IMAGENET_TO_STL10[895] == STL10_CLASSES.index("airplane")
    assert names[404] == "airliner" and names[895] == "warplane"
    assert 726 not in IMAGENET_TO_STL10 and names[726] == "plane"  # the carpenter's tool
    assert IMAGENET_TO_STL10[339] == STL10_CLASSES.index("horse") and names[339] == "sorrel"
    assert IMAGENET_TO_STL10[510] == STL10_CLASSES.index("ship") and names[510] == "container ship"
    assert IMAGENET_TO_STL10[867] == STL10_CLASSES.index("truck") and names[867] == "trailer truck"
    assert IMAGENET_TO_STL10[817] == STL10_CLASSES.index("car") and names[817] == "sports car"
    assert IMAGENET_TO_STL10[373] == STL10_CLASSES.index("monkey") and names[373] == "macaque"


def test_imagenet_mapping_is_a_function_with_no_deer():
    listed = [i for indices in IMAGENET_TO_STL10_CLASS.values() for i in indices]
    assert len(listed) == len(set(listed)), "an ImageNet index is mapped twice"
    assert all(0 <= i < 1000 for i in listed)
    assert IMAGENET_TO_STL10_CLASS["deer"] == [] and STL10_CLASSES.index("deer") not in IMAGENET_TO_STL10.values()


def test_the_mapping_covers_every_stl10_class_in_order():
    assert STL10_CLASSES is DATA_STL10_CLASSES  # one class list, the loader's
    assert list(IMAGENET_TO_STL10_CLASS) == STL10_CLASSES
    assert len(IMAGENET_TO_STL10) == sum(len(v) for v in IMAGENET_TO_STL10_CLASS.values()) == 229
    assert sorted(set(IMAGENET_TO_STL10.values())) == [i for i, c in enumerate(STL10_CLASSES) if c != "deer"]


def test_apes_lemurs_and_railway_carriages_are_other():
    names = imagenet_classes("resnet50")
    for index, name in ((365, "orangutan"), (383, "Madagascar cat"), (705, "passenger car"), (908, "wing")):
        assert names[index] == name and index not in IMAGENET_TO_STL10
    assert IMAGENET_TO_STL10[717] == STL10_CLASSES.index("truck") and names[717] == "pickup"
