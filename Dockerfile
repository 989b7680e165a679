# The SD/FLUX lab's GPU container (and every other project's): a PyTorch CUDA base image with this repository's
# pinned stack, installed from pyproject.toml (the only place versions are written; tests/test_original_commands.py
# checks that the base image's torch is the pinned one). Used through docker-compose.yml:
#
#   docker compose build labs
#   docker compose run --rm --service-ports labs /bin/bash     # a shell in /app (the repository, mounted)
#   docker compose up labs                                      # the web UI on http://localhost:7860
#
# Clusters without Docker: apptainer.def builds the same image for Apptainer/Singularity.
ARG BASE_IMAGE=pytorch/pytorch:2.14.1-cuda12.8-cudnn9-runtime
FROM ${BASE_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GRADIO_ANALYTICS_ENABLED=False \
    HF_HUB_DISABLE_TELEMETRY=1

# git: provenance (run.json records the commit); libgl/libglib: OpenCV's Canny in the web UI
RUN apt-get update \
    && apt-get install -y --no-install-recommends git libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# The repository goes to /app, where docker-compose.yml also mounts the working copy: the editable install then
# serves whichever of the two is there, and edits on the host are live in the container.
COPY pyproject.toml README.md setup.sh ./
COPY shared ./shared
COPY projects ./projects
RUN python -m pip install -e ".[dev]" \
    && python -c "import torch, torchvision, diffusers, transformers, gradio, shared, projects"
COPY . .

EXPOSE 7860
CMD ["python", "projects/sd_flux_lab/web_sd.py", "--host", "0.0.0.0", "--port", "7860"]
