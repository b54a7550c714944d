-- The instructor names already announced to each watch (issue 26): a name is emailed to a watch
-- once, whatever the scraper flaps through later (an empty instructor, Staff and the same name
-- again a day after the claim expired). Names are stored trimmed and case-folded by the check.
-- Rows go with their watch (and so with a deleted account); they hold no address.
create table if not exists public.seatwatch_instructor_announcements (
    class_watch_id uuid not null references public.class_watches (id) on delete cascade,
    instructor_name text not null,
    announced_at timestamptz not null default now(),
    primary key (class_watch_id, instructor_name)
);

alter table public.seatwatch_instructor_announcements enable row level security;

do $$
declare
    r text;
begin
    foreach r in array array['anon', 'authenticated'] loop
        if exists (select 1 from pg_roles where rolname = r) then
            execute format('revoke all on public.seatwatch_instructor_announcements from %I', r);
        end if;
    end loop;
end $$;
