"""Packaging details pyproject.toml cannot express: the repository keeps the bundled
models and sample photo in its top-level ``resources/``; the wheel ships them inside the
package as ``poseviewer/resources`` (package data). ``poseviewer.paths.resources_dir()``
finds them either way. Everything else is in pyproject.toml."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["poseviewer", "poseviewer.*"]), "poseviewer.resources"],
    package_dir={"poseviewer.resources": "resources"},
    # everything in resources/: models (*.safetensors), model cards, plots, licences, photos
    package_data={"poseviewer.resources": ["**/*"]},
)
