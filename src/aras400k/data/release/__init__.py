"""Import the published ARAS400k release (folders of PNGs, or its zips) into shard sets.

The release layout (``ROOT/{train,val,test,synth}/{images,masks}/*.png``, optional
``class_percentages/`` and ``captions/`` CSVs) and the zips' MD5 table are described in
``docs/preparing-data.md``. Each split folder becomes the shard set ``OUT/{split}``.
The import is loud, never lossy: every file that cannot be imported (an image without
a mask, a mask without an image, a size mismatch, an unknown mask colour, a corrupt
PNG, two names that give the same key) is a *problem* named with its file. With
``on_error="fail"`` the first one stops the import and nothing is written; with
``on_error="skip"`` the file is skipped and the problem listed in the
:class:`ImportReport`. Warnings (a CSV row for a file that does not exist, a CSV
composition that disagrees with the mask) never stop the import and skip nothing.

The modules, in the order an import uses them:

- :mod:`aras400k.data.release.importer`: :func:`import_release` and its
  :class:`ImportReport`; checks the arguments and writes the shard sets.
- :mod:`aras400k.data.release.zips`: the published MD5 table; checks and opens the
  release zips for reading in place.
- :mod:`aras400k.data.release.layout`: finds the split folders and the caption CSVs,
  pairs each image with its mask and gives it a sample key.
- :mod:`aras400k.data.release.tables`: reads the class-percentage and caption CSVs.
- :mod:`aras400k.data.release.pictures`: reads the images, and colour, palette or
  index masks as class indices.
- :mod:`aras400k.data.release.problems`: :class:`ReleaseImportError`, the problem
  kinds and the log that collects them.
"""

from aras400k.data.release.importer import ImportReport, import_release
from aras400k.data.release.problems import ReleaseImportError
from aras400k.data.release.zips import RELEASE_MD5, md5_of_file

__all__ = ["RELEASE_MD5", "ImportReport", "ReleaseImportError", "import_release", "md5_of_file"]
