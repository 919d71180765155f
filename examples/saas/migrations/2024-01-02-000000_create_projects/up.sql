-- Isolated: one copy per tenant schema.
CREATE TABLE account (
    id INT PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    display_name TEXT NOT NULL,
    plan_id BIGINT NOT NULL REFERENCES public.plans (id)
);
CREATE TABLE projects (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL
);
CREATE TABLE tasks (
    id BIGSERIAL PRIMARY KEY,
    project_id BIGINT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    title TEXT NOT NULL,
    done BOOLEAN NOT NULL DEFAULT false
);
