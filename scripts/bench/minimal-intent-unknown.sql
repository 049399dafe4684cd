-- pgbench minimal transaction, intent-unknown mix (payment_intent.succeeded of a customer nobody
-- knows): the rows such an event leaves, each written once, all in one statement (one round
-- trip, its own transaction), with triggers and foreign-key checks off, so no derivation runs:
-- the event row with its final status, the object's ordering mark, the intent, its billing row.
-- An upper bound for any design that keeps these rows. events per run: 1
-- pgbench: PGOPTIONS=-csession_replication_role=replica
\set n random(1, 1000000000000000)
\set c random(1, 1000000000)
with b as (select 'pi_pgb_' || :n::text as pi, 'evt_pgb_' || :n::text as evt, 'cus_pgb_' || :c::text as cid),
ev as (insert into public.stripe_webhook_events (stripe_event_id, event_type, event_data, livemode, api_version, event_created_at, request_id, event_raw_body, processing_status, processed_at, user_id, old_tier, new_tier, processing_note, error_message, next_attempt_at, retry_count)
       select b.evt, 'payment_intent.succeeded', replace(replace('{"id": "evt_pgb_@N@", "data": {"object": {"id": "pi_pgb_@N@", "amount": 4900, "object": "payment_intent", "review": null, "source": null, "status": "succeeded", "created": 1796240794, "currency": "usd", "customer": "@C@", "livemode": false, "metadata": {"price_id": "price_demo_onetime"}, "shipping": null, "processing": null, "application": null, "canceled_at": null, "description": null, "next_action": null, "on_behalf_of": null, "client_secret": "pi_pgb_@N@_secret", "latest_charge": "ch_vLK384QrDXS10IkwMZWvKh7J", "receipt_email": "buyer@example.com", "transfer_data": null, "amount_details": {"tip": {}}, "capture_method": "automatic_async", "payment_method": "pm_wbbjAUJq5Mtu1QmTWXwQzz0Z", "transfer_group": null, "amount_received": 4900, "amount_capturable": 0, "last_payment_error": null, "setup_future_usage": null, "cancellation_reason": null, "confirmation_method": "automatic", "payment_method_types": ["card"], "statement_descriptor": null, "application_fee_amount": null, "payment_method_options": {"card": {"network": null, "installments": null, "mandate_options": null, "request_three_d_secure": "automatic"}}, "automatic_payment_methods": {"enabled": true, "allow_redirects": "always"}, "statement_descriptor_suffix": null, "payment_method_configuration_details": null}}, "type": "payment_intent.succeeded", "object": "event", "created": 1796240796, "request": {"id": "req_wLTvf5QHnC69Q9", "idempotency_key": null}, "livemode": false, "api_version": "2026-07-29.dahlia", "pending_webhooks": 1}', '@N@', :n::text), '@C@', b.cid)::jsonb, false, '2026-07-29.dahlia', now(), 'b1f0c6de-5c55-4d0e-8c6a-1b1e1d1e1f10', null, 'processed', now(), null, null, null, null, null, null, 0 from b
       on conflict (stripe_event_id) do nothing),
ver as (insert into public.stripe_object_versions (object_id, object_type, event_created_at, tie_break, stripe_event_id)
        select b.pi, 'payment_intent', now(), 0, b.evt from b on conflict (object_id) do nothing),
pi as (insert into public.payment_intents (stripe_payment_intent_id, status, amount, currency, customer_id, receipt_email, price_id, stripe_customer_id, paid_at, livemode)
       select b.pi, 'succeeded', 4900, 'usd', null, null, 'price_demo_onetime', b.cid, now(), false from b),
e as (insert into public.events (category, event_type, source, user_id, amount, currency, occurred_at, external_id, metadata, status)
      select 'billing', 'stripe.payment_intent.succeeded', 'stripe', null, 49.00, 'usd', now(), b.pi, jsonb_build_object('price', 'price_demo_onetime', 'customer', b.cid, 'payment_intent', b.pi, 'checkout_session', null), 'succeeded' from b)
select 1;
