//! Changing a user's row: their profile and phone (sealed), the team's
//! block, deletion, and the logins the journal recorded.

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, EntityTrait, FromQueryResult, QueryFilter, QueryResult, QuerySelect, QueryTrait,
    sea_query::{Expr, Func},
};

use super::{
    UserRepo, now,
    statements::{LoginTally, TALLIES_PER_STATEMENT, record_logins_statement},
};
use crate::{entity::user, error::Error, fields::Validated, personal::Personal};

impl UserRepo {
    /// Stores the fields of `update` that are set, in one statement; a
    /// unionid only when the user has none yet. `None` when there is no
    /// such user.
    pub async fn update_profile(
        &self,
        appid: &str,
        openid: &str,
        update: &Validated,
    ) -> Result<Option<user::Model>, Error> {
        self.availability
            .guard(self.update_profile_now(appid, openid, update))
            .await
    }

    async fn update_profile_now(
        &self,
        appid: &str,
        openid: &str,
        update: &Validated,
    ) -> Result<Option<user::Model>, Error> {
        use user::Column;
        let mut statement = user::Entity::update_many()
            .filter(Column::Appid.eq(appid))
            .filter(Column::Openid.eq(openid))
            .col_expr(Column::UpdatedAt, Expr::value(now()));
        // Personal values are stored sealed, and their plaintext column
        // (of rows written before encryption) emptied.
        let mut sealed_any = false;
        for which in Personal::ALL {
            if let Some(value) = which.in_update(update) {
                let sealed = self.sealer.seal(appid, openid, which, value)?;
                statement = statement
                    .col_expr(which.sealed(), Expr::value(sealed))
                    .col_expr(which.plain(), Expr::value(Option::<String>::None));
                sealed_any = true;
            }
        }
        if sealed_any {
            statement = statement.col_expr(Column::DataKeyId, self.sealer.key_id_after_write());
        }
        if let (Some(code), Some(number)) = (&update.phone_country_code, &update.pure_phone_number)
        {
            statement = statement.col_expr(
                Column::PhoneIndex,
                Expr::value(self.sealer.phone_index(code, number)),
            );
        }
        if let Some(language) = &update.language {
            statement = statement.col_expr(Column::Language, Expr::value(language.clone()));
        }
        if let Some(gender) = update.gender {
            statement = statement.col_expr(Column::Gender, Expr::value(gender));
        }
        if let Some(unionid) = &update.unionid {
            statement = statement.col_expr(
                Column::Unionid,
                Func::coalesce([Expr::col(Column::Unionid), Expr::value(unionid.clone())]).into(),
            );
        }
        let backend = self.db.get_database_backend();
        let read = user::Entity::find()
            .filter(Column::Appid.eq(appid))
            .filter(Column::Openid.eq(openid))
            .limit(1)
            .build(backend);
        self.read_back(self.write_then_read(statement.build(backend), read).await?)
    }

    /// The user in `row` (read back after a write), revealed.
    fn read_back(&self, row: Option<QueryResult>) -> Result<Option<user::Model>, Error> {
        let row = row
            .map(|row| user::Model::from_query_result(&row, ""))
            .transpose()?;
        self.revealed(row)
    }

    /// Blocks (`Some(at)`) or unblocks (`None`) the user with this id: the
    /// row as it now is, `None` when there is none. Blocking a blocked user
    /// keeps the first instant.
    pub async fn set_blocked(
        &self,
        id: i64,
        at: Option<DateTime<Utc>>,
    ) -> Result<Option<user::Model>, Error> {
        self.availability
            .guard(async {
                use user::Column;
                let blocked = match at {
                    Some(at) => {
                        Func::coalesce([Expr::col(Column::BlockedAt), Expr::value(at)]).into()
                    }
                    None => Expr::value(Option::<DateTime<Utc>>::None),
                };
                let backend = self.db.get_database_backend();
                let write = user::Entity::update_many()
                    .filter(Column::Id.eq(id))
                    .col_expr(Column::BlockedAt, blocked)
                    .col_expr(Column::UpdatedAt, Expr::value(now()))
                    .build(backend);
                let read = user::Entity::find_by_id(id).build(backend);
                self.read_back(self.write_then_read(write, read).await?)
            })
            .await
    }

    /// Deletes the row with this id: false when there was none.
    pub async fn delete(&self, id: i64) -> Result<bool, Error> {
        self.availability
            .guard(async {
                let result = user::Entity::delete_by_id(id).exec(&self.db).await?;
                Ok(result.rows_affected > 0)
            })
            .await
    }

    /// Records logins that were answered without a statement of their own
    /// (see [`crate::journal`]): each user's `last_login_at` becomes the
    /// latest of its own and the tally's, and its `login_count` grows by
    /// the tally's count. One statement per [`TALLIES_PER_STATEMENT`]
    /// users; tallies of users who have no row are dropped.
    pub async fn record_logins(&self, tallies: &[LoginTally]) -> Result<(), Error> {
        self.availability
            .guard(async {
                for chunk in tallies.chunks(TALLIES_PER_STATEMENT) {
                    self.execute_retrying(record_logins_statement(
                        self.db.get_database_backend(),
                        chunk,
                    ))
                    .await?;
                }
                Ok(())
            })
            .await
    }
}
