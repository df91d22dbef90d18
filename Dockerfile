# gb28181gw on a slim Python base, running as an unprivileged user.
#   docker build -t gb28181gw .
#
# On Docker's default bridge network: publish SIP, the whole media range of conf/gateway.toml
# (media.port_min-port_max = 30000-31999, UDP and TCP; each relay worker streams from its own
# share of it) on the same port numbers, and the admin API on the host's loopback only. Inside
# the container the gateway sees only its bridge address (172.17.x.x), so pass the address
# cameras reach the host at (here 192.168.1.10: put the host's LAN IP) as the advertised one:
#   docker run --rm -e GB28181GW_SIP_ADVERTISED_ADDRESS=192.168.1.10 \
#       -p 5060:5060/udp -p 5060:5060/tcp -p 127.0.0.1:8028:8028 \
#       -p 30000-31999:30000-31999/udp -p 30000-31999:30000-31999/tcp \
#       -v gb28181gw-data:/var/lib/gb28181gw gb28181gw
# (Docker runs a proxy process per published port unless its daemon.json says
# "userland-proxy": false; the host network below needs none.)
#
# Inside the container the admin API listens on 0.0.0.0 (to be published at all), so every caller
# needs a token and the gateway refuses to start until an admin token exists. Make the first one
# once, with the gateway's container stopped: no gateway answers, so the command writes it into
# the store in the volume (the token is printed once; keep it):
#   docker run --rm -v gb28181gw-data:/var/lib/gb28181gw gb28181gw token create admin --role admin
# then call the API with it: GB28181GW_TOKEN=gbgw_… gb28181gw devices (from the host), or
# docker exec -e GB28181GW_TOKEN=gbgw_… CONTAINER gb28181gw devices. The HEALTHCHECK keeps working
# without one: /healthz and /readyz are always open (and /metrics while admin.open_metrics is true).
#
# On the host's network instead: nothing to publish, and each device is told the address it
# reached the host at, as without Docker. The admin API must then stay on loopback:
#   docker run --rm --network host -e GB28181GW_ADMIN_LISTEN=127.0.0.1 \
#       -v gb28181gw-data:/var/lib/gb28181gw gb28181gw
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# with redis-py: the image serves store.backend = "redis" too (pure Python, ~3 MB)
RUN pip install --no-cache-dir --prefix=/install ".[redis]"

FROM python:3.11-slim
COPY --from=build /install /usr/local
RUN useradd --system --home-dir /var/lib/gb28181gw --create-home --shell /usr/sbin/nologin gb
COPY conf/gateway.toml /etc/gb28181gw/gateway.toml
USER gb
WORKDIR /var/lib/gb28181gw
# SIP (UDP and TCP), the RTP port range for media, the admin API (/metrics, /healthz)
EXPOSE 5060/udp 5060/tcp 30000-31999/udp 30000-31999/tcp 8028/tcp
# Inside the container the admin API must listen beyond loopback to be published: it then asks
# every caller for a token (start-up needs an admin token, see above); still publish it to the
# host's loopback only, its plain HTTP carries the tokens in clear (admin.tls_cert for HTTPS).
ENV GB28181GW_CONFIG=/etc/gb28181gw/gateway.toml \
    GB28181GW_ADMIN_LISTEN=0.0.0.0
# The health check asks /readyz over HTTP, then over HTTPS (with admin.tls_cert the gateway speaks
# only TLS on that port; the certificate is not checked: this is the container's own loopback).
HEALTHCHECK --interval=15s --timeout=5s CMD python -c "exec('import ssl, sys, urllib.request as u\nfor s in (\'http\', \'https\'):\n try:\n  ok = u.urlopen(s + \'://127.0.0.1:8028/readyz\', timeout=2, context=ssl._create_unverified_context()).status == 200\n except OSError:\n  continue\n sys.exit(0 if ok else 1)\nsys.exit(1)')"
STOPSIGNAL SIGTERM
ENTRYPOINT ["gb28181gw"]
CMD ["serve"]
