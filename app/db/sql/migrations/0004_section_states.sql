-- Change detection per (term, class_nbr). The site's class_states is unique on class_nbr alone, so
-- one class number watched in two terms would overwrite its own state every check; this service
-- keeps its own state per term (and still writes class_states for the site's dashboard).
-- scraped_at orders scrapes: an older scrape that commits after a newer one is ignored.
create table if not exists public.seatwatch_section_states (
    term text not null,
    class_nbr text not null,
    instructor_name text,
    seats_available integer not null default 0,
    seats_capacity integer not null default 0,
    non_reserved_seats integer,
    scraped_at timestamptz not null,
    changed_at timestamptz not null default now(),
    primary key (term, class_nbr)
);

-- Start from what the site's table knows for the term it last stored, so the first check after the
-- move detects an opening instead of taking a silent baseline.
insert into public.seatwatch_section_states
    (term, class_nbr, instructor_name, seats_available, seats_capacity, non_reserved_seats,
     scraped_at, changed_at)
select term, class_nbr, instructor_name, coalesce(seats_available, 0), coalesce(seats_capacity, 0),
       non_reserved_seats, last_checked_at, last_changed_at
from public.class_states
on conflict do nothing;
