"""deeplab-tfx: a TFX pipeline for DeepLab V3 semantic segmentation.

`install_requires` lists what the code imports so Beam workers (`--setup_file ./setup.py`) and a
Kubeflow image can install the project; `requirements.lock` pins the whole tested stack.
"""

from setuptools import find_packages, setup

setup(
    name="deeplab-tfx",
    version="0.1.0",
    description="TFX pipeline for DeepLab V3 semantic segmentation: VOC/SBD ingestion with Beam, "
    "training, mIoU gating, TF Serving export and gRPC/REST clients.",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.9,<3.12",
    packages=find_packages(include=["pipeline*", "components*", "models*", "data*", "serving*"]),
    py_modules=["runner"],
    package_data={"serving": ["config/*", "k8s/*", "docker-compose.yml"], "pipeline": ["schema/*.pbtxt"]},
    install_requires=[
        "tfx[kfp]==1.16.0",
        "apache-beam[gcp]==2.59.0",
        "tensorflow==2.16.2",
        "tf-keras==2.16.0",
        "tensorflow-serving-api==2.16.1",
        "tensorflow-transform==1.16.0",
        "scipy",
        "pillow",
        "matplotlib",
        "tqdm",
        "grpcio",
    ],
    extras_require={"test": ["pytest", "pytest-timeout"]},
    entry_points={"console_scripts": ["deeplab=runner:main"]},
)
