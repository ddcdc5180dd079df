"""Magic, versions, alignments and limits of the ICQ format; each cites its spec section."""

FORMAT_MAJOR = 1  # 4.1
FORMAT_MINOR = 0  # 4.1
MAGIC = b"\x89ICQ\r\n\x1a\n"  # 4.1
FIXED_HEADER_SIZE = 64  # 4.1

DATA_ALIGNMENT = 256  # 4.3: payloads start at multiples of this
SECTION_ALIGNMENT = 64  # 6: each body section is padded to a multiple of this
WORD_BYTES = 4  # 5: packed arrays occupy whole 32-bit words

CHUNK_LOG2_MIN, CHUNK_LOG2_MAX = 12, 30  # 4.1
DEFAULT_CHUNK_LOG2 = 16  # informative: 64 KiB checksum chunks

# 4.5 Limits
MAX_DIRECTORY_SIZE = 1 << 26
MAX_TENSORS = 1 << 20
MAX_METADATA = 1 << 16
MAX_FEATURES = 1 << 10
MAX_NAME_LENGTH = 1024
MAX_VALUE_LENGTH = 1 << 24
MAX_RANK = 8
MAX_ELEMENTS = 1 << 48
MAX_DATA_SIZE = 1 << 60

# 4.2.3 / 6 Codings
CODING_RAW = 0
CODING_ICQ = 1

# 6.2 icq parameters
ICQ_PARAMS_LENGTH = 24
KIND_UNIFORM = 0
KIND_CODEBOOK = 1
MIN_BITS, MAX_BITS = 1, 8
MIN_GAP_BITS, MAX_GAP_BITS = 1, 16
MIN_COUNT_BITS, MAX_COUNT_BITS = 1, 32
MIN_SEGMENT_LOG2, MAX_SEGMENT_LOG2 = 4, 24
DEFAULT_SEGMENT_LOG2 = 10  # informative (10)

RESERVED_KEY_PREFIX = "icq."  # 4.2.2
