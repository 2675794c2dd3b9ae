"""Image restoration with macattr: the pieces of RAM's pipeline ("Restore Anything with Masks", ECCV 2024).

The core of macattr knows nothing of images being restored; this subpackage
holds everything that does, once, for the demo, the ``macattr`` command, the
RAM example (``examples/ram``) and the benchmarks:

- [`degradations`][macattr.restoration.degradations]: noise, blur, JPEG and two stand-ins, by task name;
- [`masking`][macattr.restoration.masking]: pixel masks and the masked L1 loss of mask pre-training;
- [`images`][macattr.restoration.images]: image files, crops, bundled and scikit-image photographs;
- [`networks`][macattr.restoration.networks]: SwinIR-style and PromptIR-style restorers;
- [`data`][macattr.restoration.data]: training, analysis and test batches;
- [`train`][macattr.restoration.train]: one training loop with resume, and weights files;
- [`evaluate`][macattr.restoration.evaluate]: restoring and PSNR/SSIM;
- [`ram_files`][macattr.restoration.ram_files]: RAM's ``filter_*.txt``;
- [`demo`][macattr.restoration.demo]: the embedded default (``macattr demo``).
"""

from macattr.restoration.ram_files import write_ram_files

__all__ = ["write_ram_files"]
