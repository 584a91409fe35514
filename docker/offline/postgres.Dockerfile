# A stand-in for the public postgres:16 image, built where no image registry can be reached: Debian's
# PostgreSQL 15 with a small entrypoint that honours the same variables (POSTGRES_USER, POSTGRES_PASSWORD,
# POSTGRES_DB) and data folder (/var/lib/postgresql/data). docker/compose_test.sh builds it and passes it
# to docker-compose.yml as HPO_POSTGRES_IMAGE. Not for production: use the public image there.
#
#   docker build -f docker/offline/postgres.Dockerfile -t local/postgres:15 docker/offline
ARG DEBIAN_IMAGE=local/debian:bookworm
FROM ${DEBIAN_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive
# No cluster at install time: the entrypoint makes one in PGDATA on the first start.
RUN mkdir -p /etc/postgresql-common/createcluster.d \
    && echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/no-main.conf \
    && apt-get update \
    && apt-get install -y --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/lib/postgresql/data /var/run/postgresql \
    && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql \
    && chmod 700 /var/lib/postgresql/data

ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PGDATA=/var/lib/postgresql/data
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint.sh
USER postgres
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["/bin/bash", "/usr/local/bin/postgres-entrypoint.sh"]
CMD ["postgres"]
