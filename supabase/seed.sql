-- Demo catalog for local development (supabase db reset / scripts/dev.sh). Idempotent.
insert into public.products (id, active, name, description, metadata)
values
  ('prod_demo_lifetime_pack', true, 'Demo 12-month pack', 'One-time purchase: a 12-month voucher',
   '{"duration_months": "12"}'::jsonb),
  ('prod_demo_monthly', true, 'Demo monthly plan', 'Monthly subscription',
   '{"duration_months": "1"}'::jsonb)
on conflict (id) do update
  set active = excluded.active,
      name = excluded.name,
      description = excluded.description,
      metadata = excluded.metadata,
      updated_at = now()
  where (products.active, products.name, products.description, products.metadata)
        is distinct from (excluded.active, excluded.name, excluded.description, excluded.metadata);

insert into public.prices (id, product_id, active, description, unit_amount, currency, type,
                           interval, interval_count, trial_period_days, lookup_key, metadata)
values
  ('price_demo_onetime', 'prod_demo_lifetime_pack', true, '12 months, paid once', 4900, 'usd',
   'one_time', null, null, null, 'demo_onetime', '{}'::jsonb),
  ('price_demo_monthly', 'prod_demo_monthly', true, 'Monthly', 900, 'usd',
   'recurring', 'month', 1, null, 'demo_monthly', '{}'::jsonb)
on conflict (id) do update
  set product_id = excluded.product_id,
      active = excluded.active,
      description = excluded.description,
      unit_amount = excluded.unit_amount,
      currency = excluded.currency,
      type = excluded.type,
      interval = excluded.interval,
      interval_count = excluded.interval_count,
      trial_period_days = excluded.trial_period_days,
      lookup_key = excluded.lookup_key,
      metadata = excluded.metadata,
      updated_at = now()
  where (prices.product_id, prices.active, prices.description, prices.unit_amount, prices.currency,
         prices.type, prices.interval, prices.interval_count, prices.trial_period_days,
         prices.lookup_key, prices.metadata)
        is distinct from
        (excluded.product_id, excluded.active, excluded.description, excluded.unit_amount,
         excluded.currency, excluded.type, excluded.interval, excluded.interval_count,
         excluded.trial_period_days, excluded.lookup_key, excluded.metadata);
