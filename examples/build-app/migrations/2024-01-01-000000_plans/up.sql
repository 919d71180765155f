CREATE TABLE public.plans (id bigserial PRIMARY KEY, name text NOT NULL);
