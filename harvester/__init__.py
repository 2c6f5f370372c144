"""harvester: build image-classification datasets from tagged Flickr photos."""

__version__ = "0.1.0"
