# gb28181gw on a slim Python base, running as an unprivileged user.
#   docker build -t gb28181gw .
#   docker run --rm -p 5060:5060/udp -p 5060:5060/tcp -p 127.0.0.1:8028:8028 \
#       -p 30000-30500:30000-30500/udp -v gb28181gw-data:/var/lib/gb28181gw gb28181gw
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
COPY --from=build /install /usr/local
RUN useradd --system --home-dir /var/lib/gb28181gw --create-home --shell /usr/sbin/nologin gb
COPY conf/gateway.toml /etc/gb28181gw/gateway.toml
USER gb
WORKDIR /var/lib/gb28181gw
# SIP (UDP and TCP), the RTP port range for media, the admin API (/metrics, /healthz)
EXPOSE 5060/udp 5060/tcp 30000-31999/udp 30000-31999/tcp 8028/tcp
# Inside the container the admin API must listen beyond loopback to be published; publish it
# to the host's loopback only (see the run line above), it has no authentication.
ENV GB28181GW_CONFIG=/etc/gb28181gw/gateway.toml \
    GB28181GW_ADMIN_LISTEN=0.0.0.0
HEALTHCHECK --interval=15s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8028/readyz', timeout=2).status == 200 else 1)"
STOPSIGNAL SIGTERM
ENTRYPOINT ["gb28181gw"]
CMD ["serve"]
