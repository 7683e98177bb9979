"""The 100 object classes of the course's labeled set, in the starter code's index order."""

LABELED_CLASSES = (
    'cup or mug', 'bird', 'hat with a wide brim', 'person', 'dog', 'lizard', 'sheep',
    'wine bottle', 'bowl', 'airplane', 'domestic cat', 'car', 'porcupine', 'bear',
    'tape player', 'ray', 'laptop', 'zebra', 'computer keyboard', 'pitcher', 'artichoke',
    'tv or monitor', 'table', 'chair', 'helmet', 'traffic light', 'red panda', 'sunglasses',
    'lamp', 'bicycle', 'backpack', 'mushroom', 'fox', 'otter', 'guitar', 'microphone',
    'strawberry', 'stove', 'violin', 'bookshelf', 'sofa', 'bell pepper', 'bagel', 'lemon',
    'orange', 'bench', 'piano', 'flower pot', 'butterfly', 'purse', 'pomegranate', 'train',
    'drum', 'hippopotamus', 'ski', 'ladybug', 'banana', 'monkey', 'bus', 'miniskirt', 'camel',
    'cream', 'lobster', 'seal', 'horse', 'cart', 'elephant', 'snake', 'fig', 'watercraft',
    'apple', 'antelope', 'cattle', 'whale', 'coffee maker', 'baby bed', 'frog', 'bathing cap',
    'crutch', 'koala bear', 'tie', 'dumbbell', 'tiger', 'dragonfly', 'goldfish', 'cucumber',
    'turtle', 'harp', 'jellyfish', 'swine', 'pretzel', 'motorcycle', 'beaker', 'rabbit', 'nail',
    'axe', 'salt or pepper shaker', 'croquet ball', 'skunk', 'starfish')


def palette(n: int) -> list:
    # golden-ratio hue steps keep neighbouring class indices visually distinct
    import colorsys
    colours = []
    for i in range(n):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.65 + 0.35 * (i % 2),
                                      0.95 - 0.25 * ((i // 2) % 2))
        colours.append((int(r * 255), int(g * 255), int(b * 255)))
    return colours


LABELED_PALETTE = palette(len(LABELED_CLASSES))
