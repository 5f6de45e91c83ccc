"""Machine, kernel and ramdisk images: records.py owns the image tables and their rules (visibility, launch
permissions); bundles.py reads and checks bundle manifests in Walrus and makes the nodes' download
manifests; api.py answers RegisterImage, DescribeImages, DeregisterImage and the image attribute actions."""
