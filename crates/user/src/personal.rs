//! The personal columns of `users` and how they are sealed: the one owner
//! of which columns are encrypted at rest.
//!
//! Each personal value is stored in `<column>_enc`, sealed by
//! [`wxlogin_userdata::sealing`] under the current data key and bound to
//! its row and column (additional data: appid, openid, column name), so a
//! sealed value copied into another row or column does not open. The
//! plaintext column of the same name is kept for rows written before
//! encryption, NULL once the row is sealed (`crate::reseal`); a later
//! release drops them.
//!
//! Not personal, so kept plain: ids (appid, openid, unionid: the keys
//! every lookup uses, pseudonymous and meaningless outside WeChat), gender
//! and language (three values and a locale, which identify nobody), the
//! timestamps and the login count.
//!
//! A phone number is found by its blind index, `phone_index`: an HMAC of
//! the normal form of the number under `DATA_INDEX_KEY`, which equality can
//! look up without the number being readable.
//!
//! Which columns are personal, and the name of each one's sealed twin, is
//! the `personal` kind in the one list of user fields
//! ([`wxlogin_proto::user_fields!`]): [`Personal`] and [`slots`] are
//! generated from it, and the entity must have both columns of each (it
//! would not compile otherwise; the migrated schema is checked in
//! `tests/migrate.rs`).

use sea_orm::sea_query::{Expr, SimpleExpr};
use subtle::ConstantTimeEq;
use wxlogin_userdata::sealing::{self, DataKeys, IndexKey};

use crate::{
    entity::user::{self, Column},
    error::Error,
    fields::{Field, ProfileUpdate},
};

/// The `data_key_id` of a row whose sealed values may be under several
/// keys (a write under a new key beside values under an older one). It is
/// no key id, so `rewrap` always takes such a row.
pub const MIXED_KEYS: &str = "*";

/// [`Personal`], [`slots`] and their match arms, from the rows of
/// [`wxlogin_proto::user_fields!`] whose kind is `personal`: the rows are
/// walked one by one (`@keep`), the personal ones kept, then the items are
/// written once for the kept rows (`@emit`).
macro_rules! personal_columns {
    (@keep [$($kept:tt)*]) => {
        personal_columns!(@emit $($kept)*);
    };
    (@keep [$($kept:tt)*]
        $Variant:ident {
            column: $column:ident, max: $max:literal, wechat: $wechat:literal
            $(, request: $request:literal)?, kind: personal($Sealed:ident, $sealed:ident)
        }
        $(, $($rest:tt)*)?
    ) => {
        personal_columns!(@keep [$($kept)* ($Variant, $column, $Sealed, $sealed)] $($($rest)*)?);
    };
    (@keep [$($kept:tt)*] $Variant:ident { $($other:tt)* } $(, $($rest:tt)*)?) => {
        personal_columns!(@keep [$($kept)*] $($($rest)*)?);
    };
    (@emit $(($Variant:ident, $column:ident, $Sealed:ident, $sealed:ident))*) => {
        /// A personal column, sealed at rest.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Personal {
            $($Variant),*
        }

        /// How many personal columns there are.
        const PERSONAL_COLUMNS: usize = [$(Personal::$Variant),*].len();

        impl Personal {
            pub const ALL: [Personal; PERSONAL_COLUMNS] = [$(Personal::$Variant),*];

            pub const fn field(self) -> Field {
                match self {
                    $(Personal::$Variant => Field::$Variant),*
                }
            }

            /// The plaintext column of rows written before encryption.
            pub fn plain(self) -> Column {
                match self {
                    $(Personal::$Variant => Column::$Variant),*
                }
            }

            /// The sealed column.
            pub fn sealed(self) -> Column {
                match self {
                    $(Personal::$Variant => Column::$Sealed),*
                }
            }

            /// This column's value in `update`, if it sets one.
            pub fn in_update(self, update: &ProfileUpdate) -> Option<&str> {
                match self {
                    $(Personal::$Variant => update.$column.as_deref()),*
                }
            }
        }

        /// Each personal column of `row`.
        pub fn slots(row: &mut user::Model) -> [Slot<'_>; PERSONAL_COLUMNS] {
            [$((Personal::$Variant, &mut row.$column, &mut row.$sealed)),*]
        }
    };
    ($($rows:tt)*) => {
        personal_columns!(@keep [] $($rows)*);
    };
}

wxlogin_proto::user_fields!(personal_columns);

/// The width of a sealed column: its field's widest value (4 bytes a
/// character in UTF-8), sealed.
pub const fn sealed_width(field: Field) -> u32 {
    sealing::sealed_len_max(field.max_chars() as usize * 4) as u32
}

/// One personal column of a row: its plaintext and its sealed value.
pub type Slot<'a> = (Personal, &'a mut Option<String>, &'a mut Option<Vec<u8>>);

/// The keys personal data is sealed and indexed with, built once at
/// start-up. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Sealer {
    keys: DataKeys,
    index: IndexKey,
}

/// What binds a sealed value to its place: the table, the row's unique key
/// and the column.
fn aad<'a>(appid: &'a str, openid: &'a str, which: Personal) -> [&'a [u8]; 4] {
    [
        b"users",
        appid.as_bytes(),
        openid.as_bytes(),
        which.field().column().as_bytes(),
    ]
}

impl Sealer {
    pub fn new(keys: DataKeys, index: IndexKey) -> Sealer {
        Sealer { keys, index }
    }

    pub fn keys(&self) -> &DataKeys {
        &self.keys
    }

    /// `value` of `which` in the row of (appid, openid), sealed.
    pub fn seal(
        &self,
        appid: &str,
        openid: &str,
        which: Personal,
        value: &str,
    ) -> Result<Vec<u8>, Error> {
        self.keys
            .seal(&aad(appid, openid, which), value.as_bytes())
            .map_err(Error::Seal)
    }

    /// The value of `which` that `sealed` holds in the row of (appid, openid).
    pub fn open(
        &self,
        appid: &str,
        openid: &str,
        which: Personal,
        sealed: &[u8],
    ) -> Result<String, Error> {
        let opened = |source| Error::Open {
            column: which.field().column(),
            source,
        };
        let plain = self
            .keys
            .open_to_vec(&aad(appid, openid, which), sealed)
            .map_err(opened)?;
        String::from_utf8(plain).map_err(|_| opened(sealing::OpenError::Malformed))
    }

    /// Fills the plaintext fields of `row` from its sealed values, so that
    /// the row reads as it was written. A plaintext value still stored
    /// wins: only a build without encryption writes one, after any sealed
    /// value of the column.
    pub fn reveal(&self, mut row: user::Model) -> Result<user::Model, Error> {
        let (appid, openid) = (row.appid.clone(), row.openid.clone());
        for (which, plain, sealed) in slots(&mut row) {
            if plain.is_none()
                && let Some(sealed) = sealed.as_deref()
            {
                *plain = Some(self.open(&appid, &openid, which, sealed)?);
            }
        }
        Ok(row)
    }

    /// The blind index of a phone number.
    pub fn phone_index(&self, country_code: &str, pure_number: &str) -> Vec<u8> {
        self.index.phone(country_code, pure_number).to_vec()
    }

    /// Whether a revealed `row` holds this phone number (compared in
    /// constant time, as the index is).
    pub fn holds_phone(&self, row: &user::Model, country_code: &str, pure_number: &str) -> bool {
        match (&row.phone_country_code, &row.pure_phone_number) {
            (Some(code), Some(number)) => bool::from(
                self.index
                    .phone(code, number)
                    .ct_eq(&self.index.phone(country_code, pure_number)),
            ),
            _ => false,
        }
    }

    /// `data_key_id` after a write that seals values under the current key:
    /// the current key when the row had no sealed value or only values
    /// under it, else [`MIXED_KEYS`].
    pub fn key_id_after_write(&self) -> SimpleExpr {
        let current = self.keys.current_id();
        Expr::cust_with_values(
            format!(
                "CASE WHEN data_key_id IS NULL OR data_key_id = ? THEN ? ELSE '{MIXED_KEYS}' END"
            ),
            [current, current],
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const KEY_A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn sealer() -> Sealer {
        Sealer::new(
            DataKeys::parse(&format!("a:{KEY_A}")).unwrap(),
            IndexKey::parse(KEY_A).unwrap(),
        )
    }

    #[test]
    fn the_mixed_marker_is_no_key_id() {
        assert!(!sealing::is_key_id(MIXED_KEYS));
    }

    #[test]
    fn a_sealed_value_opens_only_in_its_row_and_column() {
        let sealer = sealer();
        let sealed = sealer
            .seal("wxapp", "o-1", Personal::Nickname, "微信用户")
            .unwrap();

        assert_eq!(
            sealer
                .open("wxapp", "o-1", Personal::Nickname, &sealed)
                .unwrap(),
            "微信用户"
        );
        assert!(
            sealer
                .open("wxapp", "o-2", Personal::Nickname, &sealed)
                .is_err()
        );
        assert!(
            sealer
                .open("wxapp", "o-1", Personal::City, &sealed)
                .is_err()
        );
    }

    #[test]
    fn the_personal_columns_are_these() {
        // Sealed values are bound to their column: the set must not change
        // by accident.
        assert_eq!(
            Personal::ALL.map(Personal::field),
            [
                Field::Nickname,
                Field::AvatarUrl,
                Field::Country,
                Field::Province,
                Field::City,
                Field::PhoneNumber,
                Field::PurePhoneNumber,
                Field::PhoneCountryCode,
            ]
        );
    }

    #[test]
    fn every_personal_column_has_its_sealed_twin() {
        let mut names = std::collections::HashSet::new();
        for which in Personal::ALL {
            let plain = sea_orm::IdenStatic::as_str(&which.plain());
            let sealed = sea_orm::IdenStatic::as_str(&which.sealed());
            assert_eq!(plain, which.field().column());
            assert_eq!(sealed, format!("{plain}_enc"));
            assert!(names.insert(plain), "{plain} twice");
        }
    }
}
