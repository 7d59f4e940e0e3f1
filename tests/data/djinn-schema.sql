-- The Djinn tables djinn-consumer reads and writes (DESIGN §4, as the
-- Djinn server's migrations create them), and the least-privilege role the
-- consumer runs as. Used by the test harness (tests/harness/postgres.cc)
-- and by make demo (tests/demo.sh). Placeholders: @ROLE@, @PASSWORD@, @DB@.
CREATE TYPE driver_type AS ENUM ('ssh', 'qemu', 'docker', 'os');
CREATE TABLE images (
  id           SERIAL PRIMARY KEY,
  user_id      INT NOT NULL,
  author_id    INT NOT NULL,
  namespace_id INT NULL,
  driver       driver_type NOT NULL,
  hash         VARCHAR NOT NULL UNIQUE,
  name         VARCHAR NOT NULL,
  created_at   TIMESTAMP NOT NULL DEFAULT NOW()
);
CREATE TABLE image_downloads (
  id          SERIAL PRIMARY KEY,
  image_id    INT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
  source      VARCHAR NOT NULL,
  error       VARCHAR NULL,
  created_at  TIMESTAMP NOT NULL DEFAULT NOW(),
  started_at  TIMESTAMP NULL,
  finished_at TIMESTAMP NULL
);
CREATE ROLE @ROLE@ LOGIN PASSWORD '@PASSWORD@';
REVOKE ALL ON DATABASE @DB@ FROM PUBLIC;
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT CONNECT ON DATABASE @DB@ TO @ROLE@;
GRANT USAGE ON SCHEMA public TO @ROLE@;
GRANT SELECT ON images TO @ROLE@;
GRANT SELECT, UPDATE ON image_downloads TO @ROLE@;
