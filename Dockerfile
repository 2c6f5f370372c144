# harvester in a container. Credentials come from the environment; the harvest
# lives in the mounted folder, so it survives the container and can be resumed:
#   docker build -t harvester .
#   docker run --rm -e API_KEY -e API_SECRET --user "$(id -u):$(id -g)" \
#       -v "$PWD:/work" harvester run -c config.yaml
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md schema.sql ./
COPY harvester ./harvester
RUN pip install . && rm -rf /src

WORKDIR /work
VOLUME ["/work"]
ENTRYPOINT ["harvester"]
CMD ["run", "-c", "config.yaml"]
