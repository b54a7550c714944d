-- Supabase exposes every table in `public` through its REST API to anyone holding the site's
-- public (anon) key unless row-level security is on, and by default grants anon and authenticated
-- every privilege on new tables and functions. This service connects as the tables' owner (which
-- RLS does not restrict), so its tables get RLS with no policies and no grants to those roles:
-- recipients, unsubscribe tokens and unsent payloads are neither readable nor writable from outside.
alter table public.notification_deliveries enable row level security;
alter table public.delivery_batches enable row level security;
alter table public.seatwatch_section_states enable row level security;
alter table public.seatwatch_migrations enable row level security;

do $$
declare
    r text;
begin
    foreach r in array array['anon', 'authenticated'] loop
        if exists (select 1 from pg_roles where rolname = r) then
            execute format('revoke all on public.notification_deliveries, public.delivery_batches, '
                           'public.seatwatch_section_states, public.seatwatch_migrations from %I', r);
            execute format('revoke all on function public.claim_notification(uuid, text, integer) from %I', r);
        end if;
    end loop;
end $$;
