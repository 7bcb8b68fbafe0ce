# Test only (scripts/test_containers.sh): a stand-in for python:3.11.11-slim-bookworm where no image registry is
# reachable, made from Debian's own packages (Python 3.11). The real images keep their standard base.
FROM local/bookworm:minbase
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-pip python3-venv python-is-python3 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && rm -f /usr/lib/python3.11/EXTERNALLY-MANAGED
# The build machine's CA bundle: pip's HTTPS to the package registry is checked against it.
COPY ca-bundle.crt /etc/ssl/certs/build-ca-bundle.crt
ENV PIP_CERT=/etc/ssl/certs/build-ca-bundle.crt
CMD ["python3"]
