"""Data sources: image folders, insightface RecordIO and .bin sets, IJB-B/C meta, synthetic faces."""

from lafslib.data.base import FaceDataset
from lafslib.data.folder import ImageFolderDataset, find_sidecar
from lafslib.data.ijb import IJBMeta, IJBMetaError, load_ijb_meta, write_ijb
from lafslib.data.recordio import RecordIODataset, RecordReader, RecordWriter, pack_folder
from lafslib.data.sources import SourcePool, open_dataset, open_pool
from lafslib.data.synthetic import SyntheticFaces, render_face
from lafslib.data.verification import UnsafePickleError, load_bin, write_bin
from lafslib.io import BadImageError, decode_image, list_images, read_image

__all__ = [
    "BadImageError",
    "FaceDataset",
    "IJBMeta",
    "IJBMetaError",
    "ImageFolderDataset",
    "RecordIODataset",
    "RecordReader",
    "RecordWriter",
    "SyntheticFaces",
    "UnsafePickleError",
    "decode_image",
    "find_sidecar",
    "list_images",
    "load_bin",
    "load_ijb_meta",
    "open_dataset",
    "open_pool",
    "SourcePool",
    "pack_folder",
    "read_image",
    "render_face",
    "write_bin",
    "write_ijb",
]
