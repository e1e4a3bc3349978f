"""ImageNet classes in the words a family searches with: "seashore, coast, seacoast, sea-coast" -> "beach, sea".

ImageNet's 1000 classes are WordNet synsets: 118 dog breeds, "tabby, tabby cat", "alp", "trifle". The photo-
relevant ones are mapped here by class index (with the class's first synonym beside it, checked by the tests):
the animal groups by index range (every dog breed says "dog"), scenes, food, vehicles, family moments. Any other
class falls back to its first synonym ("abacus"). Pure data and lookups, no I/O.
"""

from __future__ import annotations

from typing import Final

# (first index, last index, words, first synonym of the first class, of the last): whole groups of classes
RANGES: Final[tuple[tuple[int, int, str, str, str], ...]] = (
    (0, 6, "fish", "tench", "stingray"),
    (7, 24, "bird", "cock", "great grey owl"),
    (25, 32, "frog, amphibian", "European fire salamander", "tailed frog"),
    (33, 37, "turtle", "loggerhead", "box turtle"),
    (38, 48, "lizard, reptile", "banded gecko", "Komodo dragon"),
    (49, 50, "crocodile", "African crocodile", "American alligator"),
    (52, 68, "snake", "thunder snake", "sidewinder"),
    (72, 77, "spider", "black and gold garden spider", "wolf spider"),
    (80, 100, "bird", "black grouse", "black swan"),
    (118, 126, "crab, seafood", "Dungeness crab", "isopod"),
    (127, 146, "bird", "white stork", "albatross"),
    (147, 150, "whale, sea", "grey whale", "sea lion"),
    (151, 268, "dog", "Chihuahua", "Mexican hairless"),
    (269, 280, "wolf, fox, wild animal", "timber wolf", "grey fox"),
    (281, 285, "cat", "tabby", "Egyptian cat"),
    (286, 293, "big cat, wild animal", "cougar", "cheetah"),
    (294, 297, "bear", "brown bear", "sloth bear"),
    (300, 326, "insect", "tiger beetle", "lycaenid"),
    (365, 384, "monkey", "orangutan", "indri"),
    (385, 386, "elephant", "Indian elephant", "African elephant"),
    (389, 397, "fish", "barracouta", "puffer"),
    (923, 935, "food", "plate", "mashed potato"),
    (936, 947, "vegetables, food", "head cabbage", "mushroom"),
    (948, 957, "fruit, food", "Granny Smith", "pomegranate"),
)

# index -> (first synonym, words): single classes
CLASSES: Final[dict[int, tuple[str, str]]] = {
    8: ("hen", "chicken, bird"), 7: ("cock", "chicken, bird"), 130: ("flamingo", "flamingo, bird"),
    145: ("king penguin", "penguin, bird"), 330: ("wood rabbit", "rabbit"), 331: ("hare", "rabbit"),
    332: ("Angora", "rabbit"), 333: ("hamster", "hamster, pet"), 338: ("guinea pig", "guinea pig, pet"),
    339: ("sorrel", "horse"), 340: ("zebra", "zebra"), 341: ("hog", "pig"), 345: ("ox", "cow"),
    346: ("water buffalo", "cow, buffalo"), 348: ("ram", "sheep"), 354: ("Arabian camel", "camel"),
    355: ("llama", "llama"), 387: ("lesser panda", "panda"), 388: ("giant panda", "panda"),
    107: ("jellyfish", "jellyfish, sea"), 327: ("starfish", "starfish, beach, sea"),
    # scenes and places
    970: ("alp", "mountain, snow"), 972: ("cliff", "cliff, mountain"), 973: ("coral reef", "coral reef, sea"),
    974: ("geyser", "geyser"), 975: ("lakeside", "lake"), 976: ("promontory", "coast, sea"),
    977: ("sandbar", "beach, sea"), 978: ("seashore", "beach, sea"), 979: ("valley", "valley, mountain"),
    980: ("volcano", "volcano, mountain"), 460: ("breakwater", "harbour, sea"), 536: ("dock", "harbour, boat"),
    718: ("pier", "pier, sea"), 437: ("beacon", "lighthouse, coast"), 449: ("boathouse", "boathouse, lake"),
    839: ("suspension bridge", "bridge"), 821: ("steel arch bridge", "bridge"), 888: ("viaduct", "bridge"),
    525: ("dam", "dam, lake"), 562: ("fountain", "fountain"), 703: ("park bench", "park"),
    483: ("castle", "castle"), 698: ("palace", "palace"), 497: ("church", "church"),
    663: ("monastery", "monastery, church"), 668: ("mosque", "mosque"), 832: ("stupa", "temple"),
    873: ("triumphal arch", "monument"), 682: ("obelisk", "monument"), 649: ("megalith", "monument, stones"),
    538: ("dome", "dome, church"), 624: ("library", "library, books"), 762: ("restaurant", "restaurant"),
    415: ("bakery", "bakery, cake"), 509: ("confectionery", "sweets, cake"), 582: ("grocery store", "shop"),
    425: ("barn", "farm"), 580: ("greenhouse", "garden"), 706: ("patio", "garden, terrace"),
    672: ("mountain tent", "tent, camping"), 915: ("yurt", "tent, camping"), 797: ("sleeping bag", "camping"),
    476: ("carousel", "fair, carousel"), 843: ("swing", "playground, swing"), 819: ("stage", "concert, stage"),
    # snow and sport
    795: ("ski", "ski, snow"), 802: ("snowmobile", "snow"), 803: ("snowplow", "snow"),
    537: ("dogsled", "sled, snow, dog"), 450: ("bobsled", "sled, snow"), 805: ("soccer ball", "football"),
    560: ("football helmet", "football"), 430: ("basketball", "basketball"), 852: ("tennis ball", "tennis"),
    890: ("volleyball", "volleyball, beach"), 574: ("golf ball", "golf"), 981: ("ballplayer", "baseball"),
    983: ("scuba diver", "diving, sea"), 801: ("snorkel", "snorkel, sea"),
    445: ("bikini", "swimsuit, beach"), 638: ("maillot", "swimsuit, beach"), 639: ("maillot", "swimsuit, beach"),
    842: ("swimming trunks", "swimsuit, beach"), 433: ("bathing cap", "swimming"),
    # family moments
    417: ("balloon", "balloons, party"), 470: ("candle", "candles, party"), 982: ("groom", "wedding"),
    578: ("gown", "dress, wedding"), 496: ("Christmas stocking", "christmas"), 850: ("teddy", "teddy bear, toy"),
    431: ("bassinet", "baby"), 516: ("cradle", "baby"), 520: ("crib", "baby"), 529: ("diaper", "baby"),
    443: ("bib", "baby"), 680: ("nipple", "baby bottle"), 865: ("toyshop", "toys"),
    607: ("jack-o'-lantern", "halloween, pumpkin"), 611: ("jigsaw puzzle", "puzzle, game"),
    # food and drink
    927: ("trifle", "cake, dessert"), 928: ("ice cream", "ice cream, dessert"),
    929: ("ice lolly", "ice cream, dessert"), 960: ("chocolate sauce", "chocolate, dessert"),
    930: ("French loaf", "bread"), 931: ("bagel", "bread"), 932: ("pretzel", "bread"),
    933: ("cheeseburger", "burger, food"), 934: ("hotdog", "hot dog, food"), 963: ("pizza", "pizza, food"),
    959: ("carbonara", "pasta, food"), 962: ("meat loaf", "meat, food"), 964: ("potpie", "pie, food"),
    965: ("burrito", "burrito, food"), 961: ("dough", "baking"), 966: ("red wine", "wine, drink"),
    907: ("wine bottle", "wine, drink"), 440: ("beer bottle", "beer, drink"), 441: ("beer glass", "beer, drink"),
    967: ("espresso", "coffee, cup"), 968: ("cup", "cup, coffee, tea"), 504: ("coffee mug", "coffee, mug"),
    849: ("teapot", "tea"), 969: ("eggnog", "drink"), 532: ("dining table", "dinner, table"),
    # plants
    985: ("daisy", "flowers"), 986: ("yellow lady's slipper", "flowers, orchid"), 984: ("rapeseed", "field, flowers"),
    883: ("vase", "vase, flowers"), 738: ("pot", "flowerpot, plant"), 987: ("corn", "corn, field"),
    # vehicles
    407: ("ambulance", "car, ambulance"), 436: ("beach wagon", "car"), 468: ("cab", "car, taxi"),
    511: ("convertible", "car"), 609: ("jeep", "car"), 627: ("limousine", "car"), 656: ("minivan", "car"),
    661: ("Model T", "car, vintage"), 717: ("pickup", "car, truck"), 751: ("racer", "car, race"),
    817: ("sports car", "car"), 581: ("grille", "car"), 479: ("car wheel", "car"), 573: ("go-kart", "go-kart"),
    864: ("tow truck", "truck"), 867: ("trailer truck", "truck"), 675: ("moving van", "truck"),
    555: ("fire engine", "fire engine, truck"), 779: ("school bus", "bus"), 654: ("minibus", "bus"),
    874: ("trolleybus", "bus"), 757: ("recreational vehicle", "camper van"), 660: ("mobile home", "camper van"),
    444: ("bicycle-built-for-two", "bicycle"), 671: ("mountain bike", "bicycle"), 870: ("tricycle", "tricycle"),
    665: ("moped", "motorbike, scooter"), 670: ("motor scooter", "motorbike, scooter"),
    404: ("airliner", "plane"), 895: ("warplane", "plane"), 405: ("airship", "airship"),
    908: ("wing", "plane"), 812: ("space shuttle", "space"), 657: ("missile", "rocket"),
    466: ("bullet train", "train"), 547: ("electric locomotive", "train"), 820: ("steam locomotive", "train"),
    565: ("freight car", "train"), 705: ("passenger car", "train"), 829: ("streetcar", "tram"),
    472: ("canoe", "boat, canoe"), 484: ("catamaran", "boat, sailing"), 510: ("container ship", "ship"),
    554: ("fireboat", "boat"), 576: ("gondola", "boat, gondola"), 625: ("lifeboat", "boat"),
    628: ("liner", "ship, cruise"), 724: ("pirate", "ship"), 780: ("schooner", "boat, sailing"),
    814: ("speedboat", "boat"), 871: ("trimaran", "boat, sailing"), 914: ("yawl", "boat, sailing"),
    693: ("paddle", "boat, canoe"), 913: ("wreck", "shipwreck"), 866: ("tractor", "tractor, farm"),
    # things often in view
    759: ("reflex camera", "camera"), 732: ("Polaroid camera", "camera"), 872: ("tripod", "camera, tripod"),
    620: ("laptop", "computer"), 527: ("desktop computer", "computer"), 851: ("television", "tv"),
    879: ("umbrella", "umbrella, rain"), 836: ("sunglass", "sunglasses"), 837: ("sunglasses", "sunglasses"),
    579: ("grand piano", "piano, music"), 402: ("acoustic guitar", "guitar, music"),
    546: ("electric guitar", "guitar, music"), 889: ("violin", "violin, music"), 541: ("drum", "drums, music"),
}


def words_for(index: int, name: str) -> str:
    """The plain words of ImageNet class `index` whose synonyms are `name` ("seashore, coast, ...")."""
    hit = CLASSES.get(index)
    if hit is not None:
        return hit[1]
    for first, last, words, _, _ in RANGES:
        if first <= index <= last:
            return words
    return name.split(",")[0].strip()


def merge_words(labels: list[tuple[str, float]]) -> list[str]:
    """(words, score) of one item's labels -> its distinct words, the most confident first ("beach, sea" and
    "coast, sea" -> beach, sea, coast): each word's score is the sum over the labels that name it."""
    scores: dict[str, float] = {}
    for words, score in labels:
        for word in (w.strip() for w in words.split(",")):
            if word:
                scores[word] = scores.get(word, 0.0) + score
    return [w for w, _ in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))]
