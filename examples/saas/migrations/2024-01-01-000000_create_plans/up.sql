-- Shared: one copy, in public, read by every tenant.
CREATE TABLE plans (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    max_projects INT NOT NULL,
    price_cents INT NOT NULL
);
INSERT INTO plans (name, max_projects, price_cents) VALUES ('free', 3, 0), ('pro', 100, 2900);
