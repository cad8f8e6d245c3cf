//! The coordinate reference systems a cadastre file may use, and their reprojection to
//! WGS84 longitude/latitude (proj4rs, a pure-Rust port of PROJ's transformations).
//!
//! | EPSG | name | transformation to WGS84 |
//! |---|---|---|
//! | 4326, CRS84 | WGS84 (longitude, latitude) | none |
//! | 3003 | Monte Mario / Italy zone 1 (Gauss-Boaga west) | inverse Transverse Mercator on the International 1924 ellipsoid, then the 7-parameter Helmert shift of EPSG:1660 (Monte Mario to WGS 84 (4), mainland Italy, about 4 m) |
//! | 6707, 7791 | RDN2008 / UTM zone 32N | inverse UTM 32 on GRS80; RDN2008 (ETRF2000) is taken as WGS84, as PROJ does without a grid |
//!
//! Coordinates are read easting first, northing second in every projected system (the
//! GIS order of GeoJSON and Shapefile files, also for EPSG:6707 whose registry axis
//! order is northing, easting).

use std::fmt;

use proj4rs::proj::Proj;

/// A coordinate reference system the importer reprojects from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crs {
    /// WGS84 longitude, latitude in degrees (EPSG:4326 in GIS order, OGC CRS84).
    Wgs84,
    /// EPSG:3003, Monte Mario / Italy zone 1.
    MonteMarioItaly1,
    /// RDN2008 / UTM zone 32N: EPSG:6707 or EPSG:7791 (the code kept for messages).
    Rdn2008Utm32(u32),
}

/// A CRS the importer does not know, named as the file or the option gave it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown coordinate reference system {0:?}: supported are EPSG:4326 (and OGC CRS84), EPSG:3003 (Monte Mario / Italy zone 1), EPSG:6707 and EPSG:7791 (RDN2008 / UTM zone 32N)")]
pub struct UnknownCrs(pub String);

const MONTE_MARIO_1: &str = "+proj=tmerc +lat_0=0 +lon_0=9 +k=0.9996 +x_0=1500000 +y_0=0 +ellps=intl +towgs84=-104.1,-49.1,-9.9,0.971,-2.917,0.714,-11.68 +units=m +no_defs";
const RDN2008_UTM32: &str =
    "+proj=utm +zone=32 +ellps=GRS80 +towgs84=0,0,0,0,0,0,0 +units=m +no_defs";
const WGS84: &str = "+proj=longlat +ellps=WGS84 +datum=WGS84 +no_defs";

impl Crs {
    pub fn from_epsg(code: u32) -> Result<Crs, UnknownCrs> {
        match code {
            4326 => Ok(Crs::Wgs84),
            3003 => Ok(Crs::MonteMarioItaly1),
            6707 | 7791 => Ok(Crs::Rdn2008Utm32(code)),
            other => Err(UnknownCrs(format!("EPSG:{other}"))),
        }
    }

    /// `EPSG:3003`, `epsg:3003`, `urn:ogc:def:crs:EPSG::3003` (any version), `3003`,
    /// `urn:ogc:def:crs:OGC:1.3:CRS84`, `CRS84`.
    pub fn parse(name: &str) -> Result<Crs, UnknownCrs> {
        let t = name.trim();
        let upper = t.to_ascii_uppercase();
        if upper == "CRS84"
            || (upper.starts_with("URN:OGC:DEF:CRS:OGC:") && upper.ends_with(":CRS84"))
        {
            return Ok(Crs::Wgs84);
        }
        let code = if let Some(rest) = upper.strip_prefix("EPSG:") {
            rest
        } else if let Some(rest) = upper.strip_prefix("URN:OGC:DEF:CRS:EPSG:") {
            rest.rsplit(':').next().unwrap_or("")
        } else {
            upper.as_str()
        };
        match code.parse::<u32>() {
            Ok(n) => Crs::from_epsg(n).map_err(|_| UnknownCrs(t.to_owned())),
            Err(_) => Err(UnknownCrs(t.to_owned())),
        }
    }

    /// The CRS a WKT definition describes (a Shapefile's `.prj`, a GeoPackage's
    /// `gpkg_spatial_ref_sys.definition`): the EPSG code of its outermost `AUTHORITY` or
    /// `ID` where it has one, else its name (`Monte_Mario_Italy_1`, `RDN2008 / UTM zone
    /// 32N`, `GCS_WGS_1984`, …). Anything else is unknown, named by the WKT's name.
    pub fn from_wkt(wkt: &str) -> Result<Crs, UnknownCrs> {
        let t = wkt.trim().trim_start_matches('\u{feff}');
        // The outermost object's name: KEYWORD["name", ...
        let name = t
            .split_once('[')
            .and_then(|(_, rest)| rest.trim_start().strip_prefix('"'))
            .and_then(|rest| rest.split_once('"'))
            .map(|(name, _)| name.to_owned())
            .unwrap_or_else(|| t.chars().take(80).collect());
        // The outermost AUTHORITY["EPSG","3003"] / ID["EPSG",3003] closes the definition.
        let upper = t.to_ascii_uppercase();
        let tail = ["AUTHORITY[", "ID["]
            .iter()
            .filter_map(|k| upper.rfind(k).map(|i| (i, k.len())))
            .max_by_key(|(i, _)| *i);
        if let Some((i, k)) = tail {
            let inner: String = upper[i + k..].chars().take_while(|c| *c != ']').collect();
            let mut parts = inner.split(',').map(|p| p.trim().trim_matches('"'));
            if let (Some("EPSG"), Some(code)) = (parts.next(), parts.next()) {
                let closes = upper[i..].matches(']').count() == upper[i..].matches('[').count() + 1;
                if closes {
                    if let Ok(code) = code.parse::<u32>() {
                        return Crs::from_epsg(code).map_err(|_| UnknownCrs(name));
                    }
                }
            }
        }
        let key: String =
            name.to_ascii_lowercase().chars().filter(char::is_ascii_alphanumeric).collect();
        match key.as_str() {
            "wgs84" | "wgs1984" | "gcswgs1984" | "gcswgs84" => Ok(Crs::Wgs84),
            "montemarioitaly1" | "montemarioitalyzone1" | "montemarioromeitaly1" => {
                Ok(Crs::MonteMarioItaly1)
            }
            "rdn2008utmzone32n" | "rdn2008utm32n" => Ok(Crs::Rdn2008Utm32(7791)),
            "rdn2008utmzone32nne" => Ok(Crs::Rdn2008Utm32(6707)),
            _ => Err(UnknownCrs(name)),
        }
    }

    pub fn epsg(self) -> u32 {
        match self {
            Crs::Wgs84 => 4326,
            Crs::MonteMarioItaly1 => 3003,
            Crs::Rdn2008Utm32(code) => code,
        }
    }
}

impl fmt::Display for Crs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EPSG:{}", self.epsg())
    }
}

/// Turns one CRS's coordinates into WGS84 `[lon, lat]` degrees.
pub struct Reprojector {
    from: Option<(Proj, Proj)>,
}

impl Reprojector {
    pub fn new(crs: Crs) -> Reprojector {
        let def = match crs {
            Crs::Wgs84 => return Reprojector { from: None },
            Crs::MonteMarioItaly1 => MONTE_MARIO_1,
            Crs::Rdn2008Utm32(_) => RDN2008_UTM32,
        };
        // The definitions are constants, proven by the tests below.
        let from = Proj::from_proj_string(def).expect("a valid projection");
        let to = Proj::from_proj_string(WGS84).expect("a valid projection");
        Reprojector { from: Some((from, to)) }
    }

    /// This CRS's coordinates of a WGS84 `[lon, lat]` point in degrees (for writing
    /// test and benchmark files); `None` when it cannot be transformed.
    pub fn from_wgs84(&self, lon: f64, lat: f64) -> Option<[f64; 2]> {
        match &self.from {
            None => Some([lon, lat]),
            Some((proj, wgs84)) => {
                let mut p = (lon.to_radians(), lat.to_radians(), 0.0);
                proj4rs::transform::transform(wgs84, proj, &mut p).ok()?;
                (p.0.is_finite() && p.1.is_finite()).then_some([p.0, p.1])
            }
        }
    }

    /// WGS84 `[lon, lat]` in degrees; `None` when the point cannot be transformed or
    /// lands outside the globe.
    pub fn to_wgs84(&self, x: f64, y: f64) -> Option<[f64; 2]> {
        if !x.is_finite() || !y.is_finite() {
            return None;
        }
        let [lon, lat] = match &self.from {
            None => [x, y],
            Some((from, to)) => {
                let mut p = (x, y, 0.0);
                proj4rs::transform::transform(from, to, &mut p).ok()?;
                [p.0.to_degrees(), p.1.to_degrees()]
            }
        };
        let ok = lon.is_finite()
            && lat.is_finite()
            && (-180.0..=180.0).contains(&lon)
            && (-90.0..=90.0).contains(&lat);
        ok.then_some([lon, lat])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Piazza del Duomo, Florence (WGS84 11.2560 E, 43.7731 N) in each system, as PROJ
    /// 9.1.1 gives it (`cs2cs EPSG:4326 EPSG:n`; for EPSG:3003 PROJ picks EPSG:1660,
    /// "Monte Mario to WGS 84 (4)", the Helmert shift used here).
    const DUOMO: [f64; 2] = [11.2560, 43.7731];
    const DUOMO_3003: [f64; 2] = [1681593.1374, 4849161.3772];
    const DUOMO_UTM32: [f64; 2] = [681562.7519, 4849145.5591];
    /// Two more points, north-west and south-east of the centre.
    const MORE: [([f64; 2], [f64; 2], [f64; 2]); 2] = [
        ([11.2200, 43.8000], [1678615.6051, 4852070.8218], [678585.2642, 4852054.9365]),
        ([11.3000, 43.7500], [1685205.6702, 4846693.1177], [685175.2263, 4846677.3612]),
    ];

    /// Metres between two WGS84 points (equirectangular, fine at these distances).
    fn metres(a: [f64; 2], b: [f64; 2]) -> f64 {
        let k = 111_320.0;
        let dx = (a[0] - b[0]) * k * a[1].to_radians().cos();
        let dy = (a[1] - b[1]) * 110_574.0;
        dx.hypot(dy)
    }

    /// `.prj` files as GIS tools write them: by outermost EPSG authority, else by name.
    #[test]
    fn wkt_definitions_name_their_crs() {
        let esri_mm = r#"PROJCS["Monte_Mario_Italy_1",GEOGCS["GCS_Monte_Mario",DATUM["D_Monte_Mario",SPHEROID["International_1924",6378388.0,297.0]],PRIMEM["Greenwich",0.0],UNIT["Degree",0.0174532925199433]],PROJECTION["Transverse_Mercator"],PARAMETER["False_Easting",1500000.0],PARAMETER["False_Northing",0.0],PARAMETER["Central_Meridian",9.0],PARAMETER["Scale_Factor",0.9996],PARAMETER["Latitude_Of_Origin",0.0],UNIT["Meter",1.0]]"#;
        assert_eq!(Crs::from_wkt(esri_mm), Ok(Crs::MonteMarioItaly1));
        let ogc_utm = r#"PROJCS["RDN2008 / UTM zone 32N",GEOGCS["RDN2008",DATUM["Rete_Dinamica_Nazionale_2008",SPHEROID["GRS 1980",6378137,298.257222101,AUTHORITY["EPSG","7019"]],AUTHORITY["EPSG","1132"]],PRIMEM["Greenwich",0,AUTHORITY["EPSG","8901"]],UNIT["degree",0.0174532925199433,AUTHORITY["EPSG","9122"]],AUTHORITY["EPSG","6706"]],PROJECTION["Transverse_Mercator"],UNIT["metre",1,AUTHORITY["EPSG","9001"]],AUTHORITY["EPSG","7791"]]"#;
        assert_eq!(Crs::from_wkt(ogc_utm), Ok(Crs::Rdn2008Utm32(7791)));
        let wgs = r#"GEOGCS["GCS_WGS_1984",DATUM["D_WGS_1984",SPHEROID["WGS_1984",6378137.0,298.257223563]],PRIMEM["Greenwich",0.0],UNIT["Degree",0.0174532925199433]]"#;
        assert_eq!(Crs::from_wkt(wgs), Ok(Crs::Wgs84));
        // An inner authority (the datum's) does not name the projected system.
        let inner_only =
            r#"PROJCS["Mystery grid",GEOGCS["WGS 84",AUTHORITY["EPSG","4326"]],UNIT["metre",1]]"#;
        assert_eq!(Crs::from_wkt(inner_only), Err(UnknownCrs("Mystery grid".into())));
        let wkt2 = r#"PROJCRS["ETRS89 / UTM zone 32N",BASEGEOGCRS["ETRS89"],ID["EPSG",25832]]"#;
        assert_eq!(Crs::from_wkt(wkt2), Err(UnknownCrs("ETRS89 / UTM zone 32N".into())));
        assert!(Crs::from_wkt("not a wkt").is_err());
    }

    #[test]
    fn utm_points_reproject_to_the_centimetre() {
        for code in [6707, 7791] {
            let r = Reprojector::new(Crs::from_epsg(code).unwrap());
            let got = r.to_wgs84(DUOMO_UTM32[0], DUOMO_UTM32[1]).unwrap();
            assert!(metres(got, DUOMO) < 0.01, "EPSG:{code}: {got:?}");
            for (wgs, _, utm) in MORE {
                let got = r.to_wgs84(utm[0], utm[1]).unwrap();
                assert!(metres(got, wgs) < 0.01, "EPSG:{code}: {got:?} vs {wgs:?}");
            }
        }
    }

    #[test]
    fn monte_mario_points_reproject_to_about_a_metre() {
        let r = Reprojector::new(Crs::MonteMarioItaly1);
        let got = r.to_wgs84(DUOMO_3003[0], DUOMO_3003[1]).unwrap();
        assert!(metres(got, DUOMO) < 1.0, "{got:?} is {} m off", metres(got, DUOMO));
        for (wgs, mm, _) in MORE {
            let got = r.to_wgs84(mm[0], mm[1]).unwrap();
            assert!(metres(got, wgs) < 1.0, "{got:?} vs {wgs:?}");
        }
        // Without the datum shift the point would be tens of metres away.
        let plain = Proj::from_proj_string(
            "+proj=tmerc +lat_0=0 +lon_0=9 +k=0.9996 +x_0=1500000 +y_0=0 +ellps=intl +units=m +no_defs",
        )
        .unwrap();
        let to = Proj::from_proj_string(WGS84).unwrap();
        let mut p = (DUOMO_3003[0], DUOMO_3003[1], 0.0);
        proj4rs::transform::transform(&plain, &to, &mut p).unwrap();
        assert!(metres([p.0.to_degrees(), p.1.to_degrees()], DUOMO) > 20.0);
    }

    #[test]
    fn forward_matches_proj_too() {
        let mm = Reprojector::new(Crs::MonteMarioItaly1).from_wgs84(DUOMO[0], DUOMO[1]).unwrap();
        assert!((mm[0] - DUOMO_3003[0]).hypot(mm[1] - DUOMO_3003[1]) < 1.0, "{mm:?}");
        let utm = Reprojector::new(Crs::Rdn2008Utm32(7791)).from_wgs84(DUOMO[0], DUOMO[1]).unwrap();
        assert!((utm[0] - DUOMO_UTM32[0]).hypot(utm[1] - DUOMO_UTM32[1]) < 0.01, "{utm:?}");
    }

    #[test]
    fn wgs84_passes_through_and_out_of_range_is_refused() {
        let r = Reprojector::new(Crs::Wgs84);
        assert_eq!(r.to_wgs84(11.25, 43.77), Some([11.25, 43.77]));
        assert_eq!(r.to_wgs84(681_562.0, 4_849_145.0), None, "projected numbers in WGS84");
        assert_eq!(r.to_wgs84(f64::NAN, 1.0), None);
        let utm = Reprojector::new(Crs::Rdn2008Utm32(7791));
        assert_eq!(utm.to_wgs84(1e300, 1e300), None);
    }

    #[test]
    fn names_parse_and_unknown_ones_are_named() {
        for (name, crs) in [
            ("EPSG:3003", Crs::MonteMarioItaly1),
            ("urn:ogc:def:crs:EPSG::7791", Crs::Rdn2008Utm32(7791)),
            ("urn:ogc:def:crs:EPSG:9.9:6707", Crs::Rdn2008Utm32(6707)),
            ("urn:ogc:def:crs:OGC:1.3:CRS84", Crs::Wgs84),
            ("epsg:4326", Crs::Wgs84),
            ("4326", Crs::Wgs84),
        ] {
            assert_eq!(Crs::parse(name), Ok(crs), "{name}");
        }
        let err = Crs::parse("EPSG:32632").unwrap_err();
        assert!(err.to_string().contains("EPSG:32632"), "{err}");
    }
}
