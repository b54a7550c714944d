-- The hand-over from the old Workers (issue 25). Idempotent.
--
-- seatwatch_handover: one row at most, saying which system runs the schedule ('vps': this service,
-- 'old': handed back to the old system). No row: the scheduler runs slots only while the database
-- shows no other system checking sections (app.schedule.handover). In PostgreSQL rather than Redis:
-- a Redis that lost its data must not forget the hand-over and start a second scheduler.
create table if not exists public.seatwatch_handover (
    singleton boolean primary key default true check (singleton),
    owner text not null check (owner in ('vps', 'old')),
    at timestamptz not null default now(),
    by_host text not null,
    note text
);
alter table public.seatwatch_handover enable row level security;

-- An existing deployment whose own checks ran in the last two hours already runs the schedule:
-- it keeps running it through this upgrade. (Rows that 0004 copied from class_states carry the old
-- system's times, all before 0004 was applied: only this service's own checks come after.)
insert into public.seatwatch_handover (owner, by_host, note)
select 'vps', 'migration 0008', 'this service was already checking sections when 0008 was applied'
where exists (
    select 1 from public.seatwatch_section_states o, public.seatwatch_migrations m
    where m.name = '0004_section_states.sql'
      and o.scraped_at > m.applied_at + interval '1 minute'
      and o.scraped_at > now() - interval '2 hours')
on conflict (singleton) do nothing;

-- Which deployment of this service made each check (SEATWATCH_INSTANCE): a second VPS deployed by
-- mistake on the same database writes the same own records, and is told apart by this alone.
alter table public.seatwatch_section_states add column if not exists checked_by text;

-- The outside-checks detector reads the class_states rows checked in the last hour. Production has
-- this very index from the site's own migration (20250122000000_create_class_tables.sql): same name,
-- so this makes no duplicate there and gives the test schema the same plan.
create index if not exists idx_class_states_last_checked on public.class_states (last_checked_at);

do $$
declare
    r text;
begin
    foreach r in array array['anon', 'authenticated'] loop
        if exists (select 1 from pg_roles where rolname = r) then
            execute format('revoke all on public.seatwatch_handover from %I', r);
        end if;
    end loop;
end $$;
