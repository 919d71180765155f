CREATE TABLE orders (id bigserial PRIMARY KEY, plan_id bigint NOT NULL REFERENCES public.plans (id));
