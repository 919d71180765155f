DROP TABLE public.plans;
