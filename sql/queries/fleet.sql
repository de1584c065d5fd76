-- name: upsert_organization
INSERT INTO organizations (org_id, name, upload_cadence_minutes)
VALUES (%(org_id)s, %(name)s, %(upload_cadence_minutes)s)
ON CONFLICT (org_id) DO UPDATE
SET name = EXCLUDED.name, upload_cadence_minutes = EXCLUDED.upload_cadence_minutes
WHERE (organizations.name, organizations.upload_cadence_minutes)
      IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.upload_cadence_minutes)

-- name: upsert_site
INSERT INTO sites (org_id, site_id, name, basin, latitude, longitude)
VALUES (%(org_id)s, %(site_id)s, %(name)s, %(basin)s, %(latitude)s, %(longitude)s)
ON CONFLICT (org_id, site_id) DO UPDATE
SET name = EXCLUDED.name, basin = EXCLUDED.basin, latitude = EXCLUDED.latitude,
    longitude = EXCLUDED.longitude
WHERE (sites.name, sites.basin, sites.latitude, sites.longitude)
      IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.basin, EXCLUDED.latitude, EXCLUDED.longitude)

-- name: upsert_compressor
INSERT INTO compressors (org_id, compressor_id, site_id, model, driver, rated_hp, rated_rpm,
                         stages, installed_on, channels)
VALUES (%(org_id)s, %(compressor_id)s, %(site_id)s, %(model)s, %(driver)s, %(rated_hp)s,
        %(rated_rpm)s, %(stages)s, %(installed_on)s, %(channels)s)
ON CONFLICT (org_id, compressor_id) DO UPDATE
SET site_id = EXCLUDED.site_id, model = EXCLUDED.model, driver = EXCLUDED.driver,
    rated_hp = EXCLUDED.rated_hp, rated_rpm = EXCLUDED.rated_rpm, stages = EXCLUDED.stages,
    installed_on = EXCLUDED.installed_on, channels = EXCLUDED.channels
WHERE (compressors.site_id, compressors.model, compressors.driver, compressors.rated_hp,
       compressors.rated_rpm, compressors.stages, compressors.installed_on, compressors.channels)
      IS DISTINCT FROM (EXCLUDED.site_id, EXCLUDED.model, EXCLUDED.driver, EXCLUDED.rated_hp,
                        EXCLUDED.rated_rpm, EXCLUDED.stages, EXCLUDED.installed_on,
                        EXCLUDED.channels)
